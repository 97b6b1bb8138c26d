"""Write MODEL_CARD.md from the registry, the committed training state and a Kodak run at delta = 1.

python -m training.card [--kodak ../shared/data/kodak] [--out MODEL_CARD.md]

Every figure in the card is measured by this command, so anyone can rerun it.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

from evaluation.datasets import KODAK
from models.cli import ArgumentParser, one_line_errors

ROOT = Path(__file__).resolve().parent.parent

PROG = "python -m training.card"


def _state_meta(name: str) -> dict:
    from training.state import read_meta
    p = ROOT / "models" / "checkpoints" / f"{name}.npz"
    return read_meta(p) if p.exists() else {}


def _shipped_info(entry) -> dict:
    """What the export recorded about the shipped weights (step, config): the state may have trained on since."""
    import json
    with np.load(entry.dec_path) as f:
        return json.loads(str(f["meta"])).get("info", {})


def _steps_line(meta: dict, shipped_step: int | None) -> str:
    """Steps of the shipped weights; a state that trained past them is named, not described as shipped."""
    step = meta.get("step", "?")
    if shipped_step is None or shipped_step == step:
        return (f"- Steps: {step}; training wall time on this 2-core machine: "
                f"{meta.get('wall_seconds', 0) / 3600:.2f} h (shared with other work).")
    return (f"- Steps: {shipped_step} (the shipped weights); its training state has continued to step {step} "
            f"({meta.get('wall_seconds', 0) / 3600:.2f} h wall on this 2-core machine), not exported: "
            "the campaign log below has its figures.")


def _lineage_line(meta: dict, own_steps: int | None = None) -> str | None:
    """Parents as recorded by training.train when the run was initialised (nearest first); `own_steps` (the
    shipped weights' step) replaces the state's when the state trained past its export."""
    chain = meta.get("lineage", [])
    if not chain:
        return None
    path = " ← ".join(f"{p['name']} (step {p['step']}{', widened' if 'widened' in p else ''}"
                      f"{', branched' if p.get('branched') else ''})" for p in chain)
    # A widened or branched parent's steps are this model's own first steps (its step count goes on).
    steps = (meta.get("step", 0) if own_steps is None else own_steps) + sum(
        p["step"] for p in chain if "widened" not in p and not p.get("branched"))
    wall = meta.get("wall_seconds", 0.0) + sum(p.get("wall_seconds", 0.0) for p in chain)
    hours = f", {wall / 3600:.2f} h on this machine including its parents" if own_steps in (None, meta.get("step")) else ""
    return f"- Lineage: fine-tuned from {path}; cumulative {steps} steps{hours}."


def _kodak_at_unity(entry, images: list[Path]) -> dict:
    from tqdm import tqdm

    from decoder.decode import ModelCache, decode_bytes
    from encoder.encode import EncoderModels
    from encoder.imageio import load_rgb8
    from evaluation.metrics import ms_ssim_y, psnr_rgb
    from models.scale_table import DELTA_CODE_UNITY
    models = EncoderModels()
    enc = models.encoder_model(entry)
    dec = ModelCache()
    bpp, psnr, ms = [], [], []
    for f in tqdm(images, desc=f"kodak @ delta=1 ({entry.name})", unit="img", file=sys.stderr):
        rgb = load_rgb8(f)
        data = enc.analyse(rgb).code(DELTA_CODE_UNITY, entry.target_index)
        rec = decode_bytes(data, dec)
        bpp.append(8 * len(data) / (rgb.shape[0] * rgb.shape[1]))
        psnr.append(psnr_rgb(rgb, rec))
        ms.append(ms_ssim_y(rgb, rec))
    return {"bpp_mean": float(np.mean(bpp)), "bpp_min": float(np.min(bpp)), "bpp_max": float(np.max(bpp)),
            "psnr_rgb": float(np.mean(psnr)), "msssim_y": float(np.mean(ms)), "images": len(images)}


def _runs_lines(runs: list[dict]) -> list[str]:
    """Every training run of the JAX trainer: where, how long, how big a batch, and its Kodak curve."""
    if not runs:
        return []
    out = ["", "Training runs (training.train on either backend; Kodak figures, where given, estimated from "
           "rounded latents' likelihoods):", "",
           "| started (UTC) | device | seconds | steps | batch × patch² | steps/s | Kodak est. bpp → PSNR-RGB |",
           "|---|---|---|---|---|---|---|"]
    for r in runs:
        c = r.get("curve", [])
        curve = (f"{c[0]['kodak_est_bpp']:.4f} / {c[0]['kodak_psnr']:.2f} dB → "
                 f"{c[-1]['kodak_est_bpp']:.4f} / {c[-1]['kodak_psnr']:.2f} dB") if c else "–"
        out.append(f"| {r.get('started', '?')} | {r.get('device', '?')} | {r.get('seconds', 0):.0f} | "
                   f"{r.get('from_step')}→{r.get('to_step')} | {r.get('batch')} × {r.get('patch')}² | "
                   f"{r.get('steps_per_s', 0):.2f} | {curve} |")
    return out


def _curve_png(name: str, history: list[dict], out: Path) -> Path | None:
    pts = [h for h in history if "coded_psnr" in h]
    if not pts:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [h["step"] for h in pts]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, [h["coded_psnr"] for h in pts], "o-", color="tab:blue")
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out PSNR-RGB (dB) at Δ=1", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(steps, [h["coded_bpp_mean"] for h in pts], "s--", color="tab:red")
    ax2.set_ylabel("coded bpp at Δ=1", color="tab:red")
    ax.set_title(f"{name}: learning curve (held-out training images, 256² crops)")
    fig.tight_layout()
    path = out / f"curve_{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def campaign_series(rows: list[dict]) -> list[dict]:
    """The campaign log as curves: per model, chains of rows that continue each other (a row's step_from is the
    previous row's step_to), each point at its cumulative CPU-hours since the chain's first row began."""
    chains: list[dict] = []
    for r in rows:
        model, lo, hi = r["model"], int(r["step_from"]), int(r["step_to"])
        chain = next((c for c in reversed(chains) if c["model"] == model and c["steps"][-1] == lo), None)
        if chain is None:
            chain = {"model": model, "dtype": r["dtype"], "hours": [0.0], "steps": [lo], "psnr": [None],
                     "bpp": [None], "exported": [False]}
            chains.append(chain)
        chain["hours"].append(chain["hours"][-1] + float(r["cpu_hours"]))
        chain["steps"].append(hi)
        chain["psnr"].append(float(r["heldout_psnr"]) if r["heldout_psnr"] else None)
        chain["bpp"].append(float(r["heldout_bpp"]) if r["heldout_bpp"] else None)
        chain["exported"].append(r["exported"] == "yes")
    return chains


def _campaign_png(chains: list[dict], out: Path) -> Path | None:
    """One panel per model (its rate sets its PSNR scale): held-out PSNR against CPU-hours, bpp beside."""
    pts = [c for c in chains if any(v is not None for v in c["psnr"])]
    if not pts:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(c["model"] for c in pts))
    cols = min(3, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        for c in (c for c in pts if c["model"] == model):
            keep = [i for i, v in enumerate(c["psnr"]) if v is not None]
            xs = [c["hours"][i] for i in keep]
            line, = ax.plot(xs, [c["psnr"][i] for i in keep], "o-",
                            label=f"from step {c['steps'][0]}, {c['dtype']}")
            for i in keep:
                ax.annotate(f"{c['bpp'][i]:.3g}", (c["hours"][i], c["psnr"][i]), fontsize=6,
                            textcoords="offset points", xytext=(3, -9))
                if c["exported"][i]:
                    ax.plot(c["hours"][i], c["psnr"][i], "*", ms=12, color=line.get_color())
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("CPU-hours since the chain began", fontsize=8)
        ax.set_ylabel("held-out PSNR-RGB (dB)", fontsize=8)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.suptitle("Training campaign (training/campaign.csv): Δ = 1, labels are coded bpp; ★ exported", fontsize=10)
    fig.tight_layout()
    path = out / "campaign.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def campaign_lines(log: Path, out: Path) -> list[str]:
    """The card's campaign section: the curves against CPU-hours and the log's rows."""
    import csv
    if not log.exists():
        return []
    rows = list(csv.DictReader(log.open()))
    if not rows:
        return []
    lines = ["", "## Training campaign", "",
             "`python -m training.campaign` trains down `training/campaign.yaml`; each stint appends a row to "
             "`training/campaign.csv`, measured on the held-out training photographs (256² crops, Δ = 1). A model "
             "replaces the shipped one only through the gate (`python -m training.campaign gate NAME`)."]
    png = _campaign_png(campaign_series(rows), out.parent / "models")
    if png:
        lines += ["", f"![campaign curves]({png.relative_to(out.parent)})"]
    keys = list(rows[0])
    lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = ArgumentParser(prog="python -m training.card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kodak", default=str(KODAK), help="Kodak PNG folder")
    p.add_argument("--out", default=str(ROOT / "MODEL_CARD.md"), help="card to write")
    p.add_argument("--limit", type=int, default=0, help="use only the first N Kodak images (0 = all)")
    args = p.parse_args(argv)
    from models.runtime import configure
    configure()
    from models.targets import TARGETS
    from models.weights import load_registry
    reg = load_registry()
    images = sorted(Path(args.kodak).glob("*.png"))
    if args.limit:
        images = images[:args.limit]
    out = Path(args.out)
    lines = ["# Model card", "",
             f"Written by `python -m training.card` on {platform.node() or 'this machine'} "
             f"({platform.processor() or platform.machine()}). Kodak figures: every image coded at Δ = 1 "
             "(delta code 128) by the shipped encoder, decoded by the shipped decoder. PSNR-RGB and MS-SSIM-Y as "
             "defined in `evaluation/metrics` (Y = BT.601 full range).", "",
             "## Registry", "", "| target | model | weights hash | trained |", "|---|---|---|---|"]
    for e in reg.entries:
        lines.append(f"| {TARGETS[e.target_index]:.2f} | {e.name} | {e.hash} | {'yes' if e.trained else 'NO (placeholder)'} |")
    seen = set()
    for e in reg.entries:
        if e.hash in seen:
            continue
        seen.add(e.hash)
        meta = _state_meta(e.name)
        info = _shipped_info(e)
        shipped = info.get("step")
        cfg = info.get("config") or meta.get("config", {})
        hist = [h for h in meta.get("history", []) if shipped is None or h["step"] <= shipped]
        runs = [r for r in meta.get("runs", []) if shipped is None or r.get("to_step", 0) <= shipped]
        k = _kodak_at_unity(e, images)
        serves = ", ".join(f"{TARGETS[x.target_index]:.2f}" for x in reg.entries if x.hash == e.hash)
        lines += ["", f"## {e.name} (serves {serves} bpp)", "",
                  f"- Training data: `../shared/data/train` (729 photographs: BSD500, Urban100, Sun-Hays and others; "
                  f"sources and licences in its MANIFEST.tsv), 1 in {cfg.get('holdout_every', 30)} held out; Kodak never used.",
                  f"- Architecture: mean-scale hyperprior, N = {cfg.get('num_filters')}, M = {cfg.get('latent_channels')}.",
                  _steps_line(meta, shipped),
                  *filter(None, [_lineage_line(meta, shipped)]),
                  f"- Loss: `{cfg.get('loss')}`; λ = {cfg.get('lmbda')}, β = {meta.get('beta', cfg.get('beta'))}, "
                  f"R_t = {meta.get('train_target', cfg.get('target_bpp'))} (R_t and β apply to the `guerin` loss only); "
                  f"lr {cfg.get('lr')}, batch {cfg.get('batch')} × {cfg.get('patch')}².",
                  f"- Kodak ({k['images']} images) at Δ = 1: coded bpp mean {k['bpp_mean']:.4f} "
                  f"(range {k['bpp_min']:.4f}–{k['bpp_max']:.4f}), PSNR-RGB {k['psnr_rgb']:.2f} dB, "
                  f"MS-SSIM-Y {k['msssim_y']:.4f}."]
        if e.note:
            lines.append(f"- Note: {e.note}")
        png = _curve_png(e.name, hist, out.parent / "models")
        if png:
            lines += ["", f"![learning curve]({png.relative_to(out.parent)})", "",
                      "| step | coded bpp (Δ=1) | PSNR-RGB | est. bpp (noisy) |", "|---|---|---|---|"]
            for h in hist:
                if "coded_psnr" in h:     # points measured by the estimated probe (accelerator runs) are in `runs`
                    lines.append(f"| {h['step']} | {h['coded_bpp_mean']:.4f} | {h['coded_psnr']:.2f} | "
                                 f"{h['val_est_bpp']:.4f} |")
        lines += _runs_lines(runs)
    from training.gate import LOG
    lines += campaign_lines(LOG, out)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
