"""Bitstream v3 against v2 on one full-size network: the run (`--v3`) and its report sections."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from evaluation.bench.plan import SIZE_8K, V3_LABELS, BenchError, Runner, describe_registry, resolve_v3_pair
from evaluation.bench.tables import ReportData, _bytes_per_px, _ok, _rss, fmib, fs, table


def run_v3(args: argparse.Namespace, runner: Runner, work: Path, kodak: Path, image_8k: Path | None) -> dict:
    """Bitstream v3 against v2 on one network (--v3): Kodak decodes, interleaved in one worker, then the 8K pair.

    Both models' streams of an image are made at the same delta code (--v3-code); the v3 model's slice nets
    start at zero output (training/bench_models.py), so both code the same symbols and the decode times
    differ by the slice loop alone.
    """
    try:
        registry, pair = resolve_v3_pair(args)
    except BenchError as e:
        return {"error": str(e)}
    v3: dict[str, Any] = {"registry": str(registry), "description": describe_registry(registry), "code": args.v3_code,
                          "models": {k: {"name": e.name, "target_index": e.target_index} for k, e in pair.items()}}
    spec = {"registry": str(registry), "threads": args.threads}
    files = sorted(kodak.glob("kodim*.png"))[:args.v3_images] if kodak.is_dir() else []
    if not files:
        v3["error"] = f"no Kodak images in {kodak} (the v3 comparison decodes Kodak)"
        return v3
    out = work / "v3"
    out.mkdir(exist_ok=True)
    enc = v3["encode"] = runner(
        f"v3 vs v2: encode {len(files)} Kodak images with both models at delta code {args.v3_code} (set-up)",
        {**spec, "op": "encode_set", "images": [str(f) for f in files], "delta_code": args.v3_code,
         "models": {k: pair[k].target_index for k in V3_LABELS}, "out_dir": str(out)})
    if _ok(enc):
        v3["decode"] = runner(
            f"v3 vs v2: decode {len(files)} Kodak images x {args.runs} run(s), interleaved",
            {**spec, "op": "decode_set", "labels": list(V3_LABELS), "runs": args.runs,
             "streams": [{k: s[k] for k in ("image", "label", "path")} for s in enc["streams"]]})
    else:
        v3["decode"] = {"error": f"encoding the Kodak streams failed: {enc.get('error')}"}
    if image_8k is not None:
        size = f"{SIZE_8K[0]}x{SIZE_8K[1]}"
        v3["8k"] = {}
        for k in V3_LABELS:
            stream = out / f"{size}.{k}.rlk"
            e = runner(f"{size} {k} bench model encode (fixed; only to make the stream)",
                       {**spec, "op": "encode_fixed", "image": str(image_8k), "runs": 1, "stream_out": str(stream),
                        "target_index": pair[k].target_index, "delta_code": args.v3_code})
            v3["8k"][k] = {"encode": e}
            if stream.is_file():
                v3["8k"][k]["decode"] = runner(f"{size} {k} bench model decode",
                                               {**spec, "op": "decode", "stream": str(stream), "runs": args.runs_8k})
    return v3

# --------------------------------------------------------------------------- bitstream v3 vs v2

def v3_ratios(dec: dict) -> dict[str, float]:
    """v3/v2 decode time per image (median of its runs), then the median over images; wall and CPU."""
    out = {}
    for kind in ("wall", "cpu"):
        per = [statistics.median(r["v3"][f"{kind}_s"]) / statistics.median(r["v2"][f"{kind}_s"])
               for r in dec["images"]]
        out[kind], out[f"{kind}_min"], out[f"{kind}_max"] = statistics.median(per), min(per), max(per)
    return out


def _v3_error(d: ReportData) -> str | None:
    """Why there is no v3 comparison to show, or None."""
    if "error" in d.v3:
        return d.v3["error"]
    dec = d.v3.get("decode")
    return None if _ok(dec) else (dec or {}).get("error", "not run")


def v3_decode_section(d: ReportData) -> list[str]:
    if d.v3 is None:
        return []
    why = _v3_error(d)
    if why:
        return [f"\nBITSTREAM V3 vs V2: ERROR: {why}"]
    dec, r = d.v3["decode"], v3_ratios(d.v3["decode"])
    rows = []
    for k in V3_LABELS:
        x = dec["labels"][k]
        rows.append([k, x["model"], str(x["version"]), fs(x["mean_bpp"], 4), fs(x["median_wall_s"]),
                     f"{x['min_wall_s']:.2f}-{x['max_wall_s']:.2f}", fs(x["median_cpu_s"]),
                     "-" if k == "v2" else f"{r['wall']:.2f}x ({r['wall_min']:.2f}-{r['wall_max']:.2f})",
                     "-" if k == "v2" else f"{r['cpu']:.2f}x ({r['cpu_min']:.2f}-{r['cpu_max']:.2f})"])
    return [f"\nBITSTREAM V3 vs V2, DECODE on Kodak, seconds: {len(dec['images'])} images, delta code "
            f"{d.v3['code']}, {d.args.runs} decode(s) of each image per model, interleaved in one process; "
            "median over images of each image's median; CPU = process time (all threads); v3/v2 = median over "
            "images of the per-image ratio (min-max). Models: " + d.v3["description"],
            table(["model", "name", "bitstream", "bpp", "wall", "min-max", "CPU", "v3/v2 wall", "v3/v2 CPU"], rows)]


def v3_split_section(d: ReportData) -> list[str]:
    if d.v3 is None or _v3_error(d):
        return []
    rows = []
    for k in V3_LABELS:
        st = d.v3["decode"]["labels"][k]["stages"]
        rows.append([k, fs(st.get("parse"), 3), fs(st.get("parse.range_decode_z"), 3),
                     fs(st.get("parse.hyper_synthesis_int"), 3), fs(st.get("parse.range_decode_y"), 3),
                     fs(st.get("parse.slice_loop"), 3), fs(st.get("parse.rest"), 3), fs(st.get("dequantize"), 3),
                     fs(st.get("synthesis"), 3), fs(st.get("to_uint8"), 3), fs(st.get("other"), 3)])
    return ["\nBITSTREAM V3 vs V2, DECODE SPLIT on Kodak, seconds (median per stage over all timed decodes): "
            "slice loop = v3's slice networks and range decoding of y, slice by slice",
            table(["model", "parse", "range z", "int h_s", "range y", "slice loop", "parse rest", "dequant",
                   "synthesis", "to_uint8", "other"], rows)]


def v3_complexity_section(d: ReportData) -> list[str]:
    if d.v3 is None or _v3_error(d):
        return []
    labels = d.v3["decode"]["labels"]
    base = labels["v2"]["kmac_per_pixel"]["total"]
    rows = []
    for k in V3_LABELS:
        m = labels[k]["kmac_per_pixel"]
        rows.append([k, fs(m["synthesis"]), fs(m["hyper_synthesis_int"]), fs(m["slice_nets"]), fs(m["total"]),
                     f"{100 * (m['total'] / base - 1):+.1f} %"])
    return ["\nDECODER COMPLEXITY, kMAC/pixel (multiply-accumulates per image pixel, thousands): synthesis g_s "
            "+ integer hyper-synthesis + v3 slice networks; range coding and element-wise work not counted",
            table(["model", "synthesis", "int h_s", "slice nets", "total", "vs v2"], rows)]


def v3_8k_section(d: ReportData) -> list[str]:
    if d.v3 is None or not d.v3.get("8k"):
        return []
    rows = []
    for k in V3_LABELS:
        r = (d.v3["8k"].get(k) or {}).get("decode")
        if not _ok(r):
            rows.append([k, "ERROR: " + (r or {}).get("error", "not run")] + ["-"] * 10)
            continue
        pa, rb = r.get("peak_rss_after_mb", {}), r.get("rss_before_mb", {})
        y = "parse.slice_loop" if "parse.slice_loop" in pa else "parse.range_decode_y"
        own = pa[y] - rb[y] if y in pa and y in rb and pa[y] > pa.get("parse.hyper_synthesis_int", 0) else None
        enc = d.v3["8k"][k].get("encode") or {}
        rows.append([k, fs(enc.get("bpp"), 4) if _ok(enc) else "-", fs(r["median_s"], 1), fmib(r.get("rss_ready_mb")),
                     fmib(pa.get("parse.hyper_synthesis_int")), fmib(rb.get(y)), fmib(pa.get(y)), fmib(own),
                     fmib(pa.get("synthesis")), fmib(pa.get("to_uint8")), fmib(_rss(r)), _bytes_per_px(r)])
    return [f"\nBITSTREAM V3 vs V2 at {SIZE_8K[0]}x{SIZE_8K[1]}: decode seconds and memory, MiB (each decode in a "
            "fresh process; 'after' = process peak (VmHWM) after the stage; 'y' = v3's slice loop, v2's range "
            "decoding of y; 'y own' = its peak minus the RSS when it began, shown when it raised the peak)",
            table(["model", "bpp", "decode s", "ready", "after int h_s", "y start RSS", "after y", "y own",
                   "after synthesis", "after to_uint8", "peak", "B/px"], rows)]
