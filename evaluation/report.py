"""Turns per-point rows into the per-image CSV, summary tables, BD-rate table, RD plots and report.md.

Table layout follows shared/anchors/kodak_summary.md so our numbers can be
read side by side with the reference anchors.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import bd, metrics
from evaluation.ffmpeg import VMAF_SCALE
from models.targets import TOLERANCE

SUMMARY_FIELDS = ("codec", "target", "n", "compliant", "mean_bpp", "var_bpp", "mean_psnr_rgb", "mean_psnr_y",
                  "mean_msssim_y", "mean_msssim_y_db", "mean_msssim_rgb", "mean_vmaf", "med_enc_ms", "med_dec_ms",
                  "mean_calls", *(f"mean_jai_{n}" for n in metrics.JPEG_AI_NAMES))
# JPEG AI set: table/plot label of each metric (evaluation.metrics.JPEG_AI_NAMES order)
JAI_LABELS = {"psnr_y": "PSNR-Y", "psnr_u": "PSNR-U", "psnr_v": "PSNR-V", "ms_ssim": "MS-SSIM",
              "iw_ssim": "IW-SSIM", "vif": "VIF", "fsim": "FSIM", "nlpd": "NLPD (lower is better)",
              "psnr_hvs": "PSNR-HVS", "vmaf": "VMAF"}
# metric key in a summary row, plot/table label, file stem
BD_METRICS = (("mean_psnr_rgb", "PSNR-RGB (dB)", "psnr_rgb"),
              ("mean_msssim_y_db", "MS-SSIM-Y dB = -10log10(1-MS-SSIM)", "msssim_y_db"),
              ("mean_vmaf", "VMAF (libvmaf default model, YUV444 BT.709)", "vmaf"))


def _mean(xs: Sequence[float]) -> float:
    """Plain mean: one NaN makes the mean NaN, so a missing value is never hidden."""
    return float(np.mean(xs)) if len(xs) else math.nan


def _num(x: Any) -> float:
    """A CSV cell or row value as float; empty or missing is NaN (rows read back from an earlier CSV)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def summarize(rows: list[dict[str, Any]], codec_order: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per (codec, target): means over images, sample variance of bpp (ddof=1), compliance count."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["codec"], float(r["target"])), []).append(r)
    order = {c: i for i, c in enumerate(codec_order or [])}
    out = []
    for (codec, target), g in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][0],
                                                                       kv[0][1])):
        bpps = [float(r["bpp"]) for r in g]
        out.append({
            "codec": codec, "target": target, "n": len(g),
            "compliant": sum(bool(r["within_band"]) for r in g),
            "mean_bpp": _mean(bpps),
            "var_bpp": float(np.var(bpps, ddof=1)) if len(bpps) > 1 else math.nan,
            "mean_psnr_rgb": _mean([r["psnr_rgb"] for r in g]),
            "mean_psnr_y": _mean([r["psnr_y"] for r in g]),
            "mean_msssim_y": _mean([r["msssim_y"] for r in g]),
            "mean_msssim_y_db": _mean([metrics.to_db(r["msssim_y"]) for r in g]),
            "mean_msssim_rgb": _mean([r["msssim_rgb"] for r in g]),
            "mean_vmaf": _mean([r["vmaf"] for r in g]),
            "med_enc_ms": 1000.0 * statistics.median(r["enc_s"] for r in g),
            "med_dec_ms": 1000.0 * statistics.median(r["dec_s"] for r in g),
            "mean_calls": _mean([r["calls"] for r in g]),
            **{f"mean_jai_{n}": _mean([_num(r.get(f"jai_{n}")) for r in g]) for n in metrics.JPEG_AI_NAMES},
        })
    return out


def bd_table(summary: list[dict[str, Any]], anchor: str) -> list[dict[str, Any]]:
    """BD-rate of every codec against `anchor` on per-target mean curves, pchip and cubic, per metric."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for s in summary:
        curves.setdefault(s["codec"], []).append(s)
    if anchor not in curves:
        return []
    a = sorted(curves[anchor], key=lambda s: s["target"])
    table = []
    for codec, pts in curves.items():
        pts = sorted(pts, key=lambda s: s["target"])
        row: dict[str, Any] = {"codec": codec}
        for key, _label, stem in BD_METRICS:
            for method in ("pchip", "cubic"):
                res = bd.bd_rate([s["mean_bpp"] for s in a], [s[key] for s in a],
                                 [s["mean_bpp"] for s in pts], [s[key] for s in pts], method)
                row[f"{stem}_{method}"] = res.value
                if method == "pchip":
                    row[f"{stem}_overlap"] = (res.overlap_lo, res.overlap_hi)
                    row[f"{stem}_note"] = res.note
        table.append(row)
    return table


def jai_bd_table(summary: list[dict[str, Any]], test: str = "ours") -> list[dict[str, Any]]:
    """BD-rate (pchip) of `test` against every other codec on each JPEG AI metric, plus the mean over MEAN7.

    One row per anchor. NLPD is negated first (lower is better), so every curve rises with rate. The
    mean is NaN when any of the seven is (a missing value is never averaged away).
    """
    curves: dict[str, list[dict[str, Any]]] = {}
    for s in summary:
        curves.setdefault(s["codec"], []).append(s)
    if test not in curves:
        return []
    t = sorted(curves[test], key=lambda s: s["target"])
    table = []
    for anchor, pts in curves.items():
        if anchor == test:
            continue
        a = sorted(pts, key=lambda s: s["target"])
        row: dict[str, Any] = {"anchor": anchor}
        for n in metrics.JPEG_AI_NAMES:
            sign = 1.0 if metrics.JPEG_AI[n][1] else -1.0
            row[n] = bd.bd_rate([s["mean_bpp"] for s in a], [sign * s[f"mean_jai_{n}"] for s in a],
                                [s["mean_bpp"] for s in t], [sign * s[f"mean_jai_{n}"] for s in t]).value
        seven = [row[n] for n in metrics.MEAN7]
        row["mean7"] = float(np.mean(seven)) if all(math.isfinite(v) for v in seven) else math.nan
        table.append(row)
    return table


# ------------------------------------------------------------------ formatting


def _f(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{nd}f}"


def _g(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.1f}%"


def summary_markdown(summary: list[dict[str, Any]], codec_info: dict[str, dict[str, Any]]) -> str:
    """Per-codec tables in the style of kodak_summary.md."""
    lines = ["## Codecs", "", "| codec | status | versions | setting |", "|---|---|---|---|"]
    for name, info in codec_info.items():
        status = "OK" if info["available"] else f"skipped: {info['reason']}"
        setting = info.get("settings", {}).get("description") or info.get("settings", {}).get("encode_command", "")
        lines.append(f"| {name} | {status} | {info.get('version', '')} | `{setting}` |" if setting
                     else f"| {name} | {status} | {info.get('version', '')} | |")
    by_codec: dict[str, list[dict[str, Any]]] = {}
    for s in summary:
        by_codec.setdefault(s["codec"], []).append(s)
    head = ("| target | compliant | mean bpp | var bpp | mean PSNR-RGB | mean PSNR-Y | mean MS-SSIM-Y | "
            "mean MS-SSIM-Y dB | mean MS-SSIM-RGB | mean VMAF | med enc ms | med dec ms | mean calls |")
    for codec, rows in by_codec.items():
        lines += ["", f"## {codec}", "", head, "|" + "---|" * 13]
        for s in rows:
            lines.append(f"| {s['target']:.2f} | {s['compliant']}/{s['n']} | {s['mean_bpp']:.4f} | "
                         f"{_g(s['var_bpp'])} | {_f(s['mean_psnr_rgb'])} | {_f(s['mean_psnr_y'])} | "
                         f"{_f(s['mean_msssim_y'], 4)} | {_f(s['mean_msssim_y_db'])} | "
                         f"{_f(s['mean_msssim_rgb'], 4)} | {_f(s['mean_vmaf'])} | {_f(s['med_enc_ms'], 1)} | "
                         f"{_f(s['med_dec_ms'], 1)} | {_f(s['mean_calls'], 1)} |")
    return "\n".join(lines) + "\n"


def bd_markdown(table: list[dict[str, Any]], anchor: str) -> str:
    """BD-rate table; negative = fewer bits than the anchor at equal quality."""
    if not table:
        return f"BD-rate: anchor `{anchor}` has no results in this run, so no BD-rate table.\n"
    lines = [f"## BD-rate vs {anchor} (negative = fewer bits than {anchor} at equal quality)", "",
             "Curves: per-target means over images (mean bpp; mean PSNR-RGB; mean of per-image MS-SSIM-Y dB; "
             "mean VMAF). Points not strictly increasing in both rate and quality are dropped; pchip = monotone "
             "piecewise-cubic interpolation of log10(rate) vs quality (`bjontegaard.bd_rate(..., "
             "method='pchip')`), cubic = 3rd-order polynomial fit; integration over the overlapping quality "
             "range. n/a = fewer than 2 (pchip) / 4 (cubic) usable points or no overlap.", "",
             "| codec | PSNR-RGB pchip | PSNR-RGB cubic | PSNR overlap (dB) | MS-SSIM-Y dB pchip | "
             "MS-SSIM-Y dB cubic | MS-SSIM overlap (dB) | VMAF pchip | VMAF cubic | VMAF overlap |",
             "|" + "---|" * 10]
    for r in table:
        cells = [r["codec"]]
        for _key, _label, stem in BD_METRICS:
            lo, hi = r[f"{stem}_overlap"]
            ov = f"{lo:.2f}-{hi:.2f}" if math.isfinite(lo) and math.isfinite(hi) and hi > lo else "none"
            cells += [_pct(r[f"{stem}_pchip"]), _pct(r[f"{stem}_cubic"]), ov]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def jai_summary_markdown(summary: list[dict[str, Any]]) -> str:
    """Per codec and target: mean of every JPEG AI metric over images."""
    names = metrics.JPEG_AI_NAMES
    lines = ["## JPEG AI metrics (means over images)", "",
             "| codec | target | mean bpp | " + " | ".join(JAI_LABELS[n] for n in names) + " |",
             "|" + "---|" * (3 + len(names))]
    for s in summary:
        nd = {n: 2 if n.startswith("psnr") or n == "vmaf" else 4 for n in names}
        lines.append(f"| {s['codec']} | {s['target']:.2f} | {s['mean_bpp']:.4f} | "
                     + " | ".join(_f(s[f"mean_jai_{n}"], nd[n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def jai_bd_markdown(table: list[dict[str, Any]], test: str = "ours") -> str:
    """BD-rate of `test` against each anchor on every JPEG AI metric and the 7-metric mean."""
    if not table:
        return f"JPEG AI BD-rate: no `{test}` results in this run.\n"
    names = metrics.JPEG_AI_NAMES
    seven = ", ".join(JAI_LABELS[n].split(" ")[0] for n in metrics.MEAN7)
    lines = [f"## JPEG AI metrics: BD-rate of {test} against each anchor (negative = fewer bits)", "",
             "Metrics as the JPEG AI reference software computes them (evaluation/metrics, 10-bit BT.709 YUV "
             "4:4:4); curves: per-target means over images; pchip BD-rate as above (NLPD negated, lower is "
             f"better). Mean of 7 = mean of the BD-rates on {seven} (n/a if any is).", "",
             "| anchor | " + " | ".join(JAI_LABELS[n].split(" ")[0] for n in names) + " | mean of 7 |",
             "|" + "---|" * (2 + len(names))]
    for r in table:
        lines.append(f"| {r['anchor']} | " + " | ".join(_pct(r[n]) for n in names) + f" | {_pct(r['mean7'])} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ files


def write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def plot_rd(summary: list[dict[str, Any]], outdir: Path, title: str) -> list[Path]:
    """One PNG per BD metric: per-target mean quality vs mean bpp, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evaluation.codecs import ALL_CODECS
    from models.targets import TARGETS

    by_codec: dict[str, list[dict[str, Any]]] = {}
    for s in summary:
        by_codec.setdefault(s["codec"], []).append(s)
    palette = plt.get_cmap("tab10").colors
    color = {c: palette[i % len(palette)] for i, c in enumerate(ALL_CODECS[1:])}  # fixed colour per codec
    paths = []
    for key, label, stem in BD_METRICS:
        fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=120)
        for codec, pts in by_codec.items():
            pts = sorted(pts, key=lambda s: s["target"])
            xs = [s["mean_bpp"] for s in pts]
            ys = [s[key] for s in pts]
            if all(math.isnan(y) for y in ys):
                continue
            style = {"linewidth": 2.4, "color": "black"} if codec == "ours" else {"color": color.get(codec)}
            ax.plot(xs, ys, marker="o", markersize=4, label=codec, **style)
        for t in TARGETS:
            ax.axvline(t, color="grey", linewidth=0.6, linestyle=":", zorder=0)
        ax.set_xlabel("bpp (mean over images)")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right")
        fig.tight_layout()
        path = outdir / f"rd_{stem}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_jai(summary: list[dict[str, Any]], outdir: Path, title: str) -> Path | None:
    """Small multiples: one panel per JPEG AI metric, per-target mean vs mean bpp, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evaluation.codecs import ALL_CODECS

    by_codec: dict[str, list[dict[str, Any]]] = {}
    for s in summary:
        by_codec.setdefault(s["codec"], []).append(s)
    names = metrics.JPEG_AI_NAMES
    if all(math.isnan(s[f"mean_jai_{n}"]) for s in summary for n in names):
        return None
    palette = plt.get_cmap("tab10").colors
    color = {c: palette[i % len(palette)] for i, c in enumerate(ALL_CODECS[1:])}
    cols = 5
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(3.2 * cols, 2.8 * -(-len(names) // cols)),
                             dpi=110, squeeze=False)
    for ax, n in zip(axes.flat, names):
        for codec, pts in by_codec.items():
            pts = sorted(pts, key=lambda s: s["target"])
            ys = [s[f"mean_jai_{n}"] for s in pts]
            if all(math.isnan(y) for y in ys):
                continue
            style = {"linewidth": 2.0, "color": "black"} if codec == "ours" else {"color": color.get(codec)}
            ax.plot([s["mean_bpp"] for s in pts], ys, marker="o", markersize=3, label=codec, **style)
        ax.set_title(JAI_LABELS[n], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(f"{title}: JPEG AI metrics vs bpp (mean over images)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    path = outdir / "rd_jpeg_ai.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def report_markdown(*, images_dir: str, n_images: int, crop: int | None, targets: Sequence[float], anchor: str,
                    codec_info: dict[str, dict[str, Any]], summary_md: str, bd_md: str, plots: Sequence[Path],
                    failures: Sequence[str], notes: Sequence[str], wall_s: float, command: str,
                    jai_md: str = "") -> str:
    """The top-level report: conventions, skips, tables and links to every output file."""
    skipped = {n: i["reason"] for n, i in codec_info.items() if not i["available"]}
    out = [f"# Evaluation report: {images_dir}", "",
           f"- command: `{command}`",
           f"- images: {n_images}" + (f" (centre-cropped to at most {crop}x{crop})" if crop else " (full size)"),
           f"- targets (bpp): {', '.join(f'{t:.2f}' for t in targets)}; compliance = |bpp/target - 1| <= "
           f"{TOLERANCE:.0%}",
           f"- codecs run: {', '.join(n for n, i in codec_info.items() if i['available']) or 'none'}",
           f"- wall time: {wall_s:.1f} s", "",
           "## Files", "",
           "- [per_image.csv](per_image.csv): one row per codec, image and target",
           "- [summary.md](summary.md) / [summary.csv](summary.csv): per codec and target",
           f"- [bd.md](bd.md) / [bd.csv](bd.csv): BD-rate vs {anchor}",
           "- [jpeg_ai_bd.csv](jpeg_ai_bd.csv): BD-rate of ours vs each anchor on the JPEG AI metrics",
           "- [codecs.json](codecs.json): versions and exact parameters / command lines of every codec",
           *[f"- [{p.name}]({p.name})" for p in plots], "",
           "## Conventions", "",
           "- bpp = 8 x file bytes / (W x H) of the bitstream actually written (no container for "
           "JPEG 2000 / HEVC / VVC: raw codestreams).",
           "- Anchors are rate-matched per image and target by searching their quality knob "
           "(`evaluation/ratematch.py`): the setting within the band closest to the target; if none, the "
           "highest-quality setting below it, never one above +15 %; if even the lowest setting overshoots, "
           "that one, counted as non-compliant. `ours` does its own rate control (one call per target).",
           f"- Y: {metrics.Y_DEFINITION}; PSNR-RGB uses one MSE over R, G and B.",
           "- MS-SSIM: `tf.image.ssim_multiscale(max_val=255)`, 5 scales, default weights; MS-SSIM-RGB is "
           "the mean of per-channel values; dB = -10 log10(1 - MS-SSIM). Images with a side < "
           f"{metrics.MSSSIM_MIN_SIDE} px cannot have 5 scales: MS-SSIM is n/a (NaN) there.",
           f"- VMAF: ffmpeg libvmaf, default model; reference and decoded PNG each converted by ffmpeg with "
           f"`{VMAF_SCALE}`, single frame, `[dis][ref]libvmaf`.",
           "- JPEG AI set (columns jai_*): as the JPEG AI reference software computes them "
           "(`evaluation/metrics`): 8-bit RGB -> 10-bit RGB and BT.709 full-range YUV 4:4:4 rounded to 10 bits; "
           "PSNR-Y/U/V peak 1023; MS-SSIM, IW-SSIM, VIF, NLPD, PSNR-HVS on Y; FSIM on RGB; VMAF (libvmaf) on "
           "the 10-bit YUV 4:4:4 planes. The earlier columns psnr_y (BT.601) and vmaf (8-bit limited range) "
           "are other definitions and are kept for comparison with earlier results.",
           "- Times: wall clock of the single encode call that produced the chosen bitstream and of one "
           "decode (ffmpeg codecs: whole process incl. colour conversion); medians over images. `ours` "
           "includes its own rate-control search in the encode time.",
           "- calls: encoder calls the per-target search issued (settings already tried for an earlier target "
           "of the same image are reused for free); `ours`: the probes its rate control reports.",
           "- Plots: dotted vertical lines mark the challenge targets.", ""]
    if skipped:
        out += ["## Skipped codecs", ""] + [f"- **{n}**: {r}" for n, r in skipped.items()] + [""]
    if failures:
        out += ["## Failures", ""] + [f"- {f}" for f in failures] + [""]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    out += [bd_md, "", jai_md, "", "# Summary", "", summary_md]
    return "\n".join(out)


def write_all(outdir: Path, rows: list[dict[str, Any]], codec_info: dict[str, dict[str, Any]], *,
              anchor: str, title: str, tools: dict[str, Any], report_args: dict[str, Any]) -> dict[str, Any]:
    """Write every output file into outdir; return summary and BD table for the caller to print."""
    from evaluation.runner import CSV_FIELDS

    order = list(codec_info)
    rows = sorted(rows, key=lambda r: (order.index(r["codec"]) if r["codec"] in order else 99, r["image"],
                                       r["target"]))
    write_csv(outdir / "per_image.csv", rows, CSV_FIELDS)
    summary = summarize(rows, order)
    write_csv(outdir / "summary.csv", summary, SUMMARY_FIELDS)
    summary_md = summary_markdown(summary, codec_info) + "\n" + jai_summary_markdown(summary)
    (outdir / "summary.md").write_text(f"# Summary ({title})\n\n{summary_md}")
    table = bd_table(summary, anchor)
    bd_md = bd_markdown(table, anchor)
    (outdir / "bd.md").write_text(bd_md)
    bd_fields = ["codec"] + [f"{stem}_{m}" for _k, _l, stem in BD_METRICS for m in ("pchip", "cubic")]
    write_csv(outdir / "bd.csv", table, bd_fields)
    (outdir / "codecs.json").write_text(json.dumps({"codecs": codec_info, **tools}, indent=2, default=str))
    jai = jai_bd_table(summary)
    jai_md = jai_bd_markdown(jai)
    write_csv(outdir / "jpeg_ai_bd.csv", jai, ["anchor", *metrics.JPEG_AI_NAMES, "mean7"])
    plots = plot_rd(summary, outdir, title) if summary else []
    jai_plot = plot_jai(summary, outdir, title) if summary else None
    plots += [jai_plot] if jai_plot else []
    (outdir / "report.md").write_text(report_markdown(codec_info=codec_info, summary_md=summary_md, bd_md=bd_md,
                                                      plots=plots, anchor=anchor, jai_md=jai_md, **report_args))
    return {"summary": summary, "bd": table, "bd_md": bd_md, "summary_md": summary_md, "jai_bd": jai,
            "jai_bd_md": jai_md}
