"""The gate: a trained state replaces the shipped model only when measurably better.

python -m training.campaign gate NAME [--export]

Measured on the held-out split of the training photographs (neither Kodak nor trained on):
each image, centre-cropped to --crop px, is coded at the model's own target with the real
rate control in fast mode (no refinement), by the shipped model and by the candidate, and
decoded by the decoder. The two land at slightly different rates inside the band, so each
image's PSNR-RGB difference is brought to the shipped stream's rate with that image's own
RD slope, measured on the shipped model one quantiser step away (dB per doubling of bits).

Noise: the images are the samples. The candidate passes when the mean slope-corrected PSNR-RGB
gain exceeds both --margin dB and `--sigmas` standard errors of the per-image differences (the
spread of gains across images; the coding itself is deterministic, so repeats add nothing), and
its MS-SSIM-Y (in dB, slope-corrected the same way) has not fallen by more than --msssim-margin dB
and `--sigmas` standard errors: a model trained on MSE can buy PSNR with structure, and the
challenge's must line has both metrics.
With --export a passing candidate is exported to models/weights, registered for its target,
its state slimmed, and its campaign-log row marked; the goldens, conformance and a fast-mode
Kodak eval come next, and the weights are committed only after them (the command says how).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from models.cli import ArgumentParser, one_line_errors

ROOT = Path(__file__).resolve().parent.parent
PROG = "training.campaign gate"
LOG = ROOT / "training" / "campaign.csv"         # the campaign log (training/campaign.py writes its rows)


def heldout_images(crop: int) -> list[tuple[str, np.ndarray]]:
    from training.config import TrainConfig
    from training.data import center_crop, list_images, load_rgb, split_holdout
    cfg = TrainConfig()
    _, val = split_holdout(list_images(cfg.train_dir), cfg.holdout_every)
    return [(f.name, center_crop(load_rgb(f), crop)) for f in val]


def _one_model_registry(folder: Path, prefix: Path, name: str, target: float):
    from training.export import register
    reg = folder / f"{name}.registry.yaml"
    register(reg, prefix, name, [target], trained=True)
    return reg


METRICS = ("psnr", "msssim")        # PSNR-RGB and MS-SSIM-Y, both in dB
DEFAULT_SLOPE = {"psnr": 6.02, "msssim": 6.02}


def _scores(img: np.ndarray, dec_img: np.ndarray) -> dict[str, float]:
    from evaluation.metrics import ms_ssim_y, psnr, to_db
    return {"psnr": psnr(img, dec_img), "msssim": to_db(ms_ssim_y(img, dec_img))}


def code_all(reg: Path, target: float, images, slope: bool) -> list[dict]:
    """Per image: bpp, PSNR-RGB and MS-SSIM-Y (dB) of the rate-controlled stream, and (slope) each metric's
    local dB per doubling of bits."""
    from decoder.decode import ModelCache, decode_bytes
    from encoder.api import Encoder
    enc, dec = Encoder(str(reg), refine=0), ModelCache(str(reg))
    out = []
    for name, img in images:
        c = enc.encode(img, target)
        row = {"image": name, "bpp": c.bpp, **_scores(img, decode_bytes(c.data, dec))}
        if slope:
            for step in (4, -4):
                try:
                    data = enc.encode_fixed(img, 0, c.delta_code + step)
                except (ValueError, IndexError):
                    continue
                bpp = 8 * len(data) / (img.shape[0] * img.shape[1])
                if abs(math.log2(bpp / c.bpp)) > 1e-3:
                    there = _scores(img, decode_bytes(data, dec))
                    for m in METRICS:
                        row[f"slope_{m}"] = (there[m] - row[m]) / math.log2(bpp / c.bpp)
                    break
            for m in METRICS:
                row.setdefault(f"slope_{m}", DEFAULT_SLOPE[m])
        out.append(row)
    return out


def compare(shipped: list[dict], candidate: list[dict], metric: str = "psnr") -> dict:
    """Mean slope-corrected gain in `metric` at the shipped rate, its standard error, and the raw means."""
    gains = np.array([c[metric] - s[metric] - s.get(f"slope_{metric}", s.get("slope", 6.02))
                      * math.log2(c["bpp"] / s["bpp"]) for s, c in zip(shipped, candidate)])
    return {"gain_db": float(gains.mean()), "se_db": float(gains.std(ddof=1) / np.sqrt(len(gains))),
            "shipped_bpp": float(np.mean([s["bpp"] for s in shipped])),
            "candidate_bpp": float(np.mean([c["bpp"] for c in candidate])),
            f"shipped_{metric}": float(np.mean([s[metric] for s in shipped])),
            f"candidate_{metric}": float(np.mean([c[metric] for c in candidate])), "n": len(gains)}


def verdict(shipped: list[dict], candidate: list[dict], margin: float = 0.02, sigmas: float = 2.0,
            msssim_margin: float = 0.05) -> dict:
    """PASS needs a PSNR-RGB gain above max(margin, sigmas x SE) and no MS-SSIM-Y loss beyond
    max(msssim_margin, sigmas x SE); both at the shipped rate."""
    p, m = compare(shipped, candidate, "psnr"), compare(shipped, candidate, "msssim")
    bar, floor = max(margin, sigmas * p["se_db"]), -max(msssim_margin, sigmas * m["se_db"])
    return {"psnr": p, "msssim": m, "bar": bar, "floor": floor,
            "passed": p["gain_db"] > bar and m["gain_db"] >= floor}


def mark_exported(log: Path, name: str, step: int) -> None:
    if not log.exists():
        return
    rows = list(csv.DictReader(log.open()))
    for r in rows:
        if r["model"] == name and int(r["step_to"]) == step:
            r["exported"] = "yes"
    with log.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]) if rows else [])
        w.writeheader()
        w.writerows(rows)


def _main(args) -> int:
    import yaml

    from models import weights as W
    from training import state
    from training.export import export, register
    state_path = Path(args.state_dir) / f"{args.name}.npz"
    params, meta = state.load(state_path)
    rows = (yaml.safe_load(Path(args.registry).read_text()) or {}).get("models", [])
    rival = args.rival or args.name
    entry = next((r for r in rows if r["name"] == rival), None)
    if entry is None:
        raise ValueError(f"{rival} is not in {args.registry}" + ("" if args.rival else "; a branch names its rival "
                                                                  "with --for"))
    target = float(entry["target"])
    images = heldout_images(args.crop)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shipped_prefix = (Path(args.registry).parent / entry["weights"]).resolve()
        shipped = code_all(_one_model_registry(tmp, shipped_prefix, "shipped", target), target, images, True)
        cand_prefix = export(params, args.name, {"step": meta["step"], "trained": True, "config": meta["config"]},
                             tmp)
        candidate = code_all(_one_model_registry(tmp, cand_prefix, args.name, target), target, images, False)
        v = verdict(shipped, candidate, args.margin, args.sigmas, args.msssim_margin)
        r, m, passed = v["psnr"], v["msssim"], v["passed"]
        print(f"{args.name} (step {meta['step']}) at {target:.2f} bpp on {r['n']} held-out {args.crop}-px crops: "
              f"shipped{' ' + rival if args.rival else ''} {r['shipped_bpp']:.4f} bpp {r['shipped_psnr']:.3f} dB, "
              f"candidate {r['candidate_bpp']:.4f} "
              f"bpp {r['candidate_psnr']:.3f} dB; PSNR-RGB gain at equal rate {r['gain_db']:+.3f} dB "
              f"(SE {r['se_db']:.3f}; bar {v['bar']:.3f}), MS-SSIM-Y {m['gain_db']:+.3f} dB "
              f"(SE {m['se_db']:.3f}; floor {v['floor']:.3f}): {'PASS' if passed else 'no'}")
        if passed and args.export:
            prefix = export(params, args.name, {"step": meta["step"], "trained": True, "config": meta["config"]},
                            Path(args.weights_dir))
            register(Path(args.registry), prefix, args.name, [target], True,
                     "; ".join(filter(None, [entry.get("note", "").split("; campaign step")[0],
                                              f"campaign step {meta['step']}: gate {r['gain_db']:+.3f} dB"])))
            before, after = state.slim(state_path, prefix)
            mark_exported(Path(args.log), args.name, int(meta["step"]))
            print(f"exported {prefix}.dec.npz ({W.file_hash(str(prefix) + '.dec.npz')}); state {before / 1e6:.1f} -> "
                  f"{after / 1e6:.1f} MB. Next, before committing the weights: python -m conformance.golden --regenerate, "
                  f"python -m conformance KODAK --quick, python -m evaluation KODAK --codecs ours --refine 0")
    return 0 if passed else 3


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=f"python -m {PROG}", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="the model (its state is STATE_DIR/NAME.npz, its target the registry's)")
    p.add_argument("--for", dest="rival", default="", metavar="SHIPPED",
                   help="the shipped model a branch (e.g. t200d, trained from t200's state) competes with; "
                        "default NAME itself")
    p.add_argument("--state-dir", default=str(ROOT / "models" / "checkpoints"), help="where the state is")
    p.add_argument("--registry", default=str(ROOT / "models" / "registry.yaml"), help="the shipped registry")
    p.add_argument("--weights-dir", default=str(ROOT / "models" / "weights"), help="where --export writes")
    p.add_argument("--crop", type=int, default=512, help="held-out images are centre-cropped to this (px)")
    p.add_argument("--margin", type=float, default=0.02, help="least gain in dB at equal rate")
    p.add_argument("--sigmas", type=float, default=2.0, help="least gain in standard errors of the mean")
    p.add_argument("--msssim-margin", type=float, default=0.05,
                   help="largest MS-SSIM-Y loss in dB at equal rate that still passes (or sigmas x SE if larger)")
    p.add_argument("--export", action="store_true", help="export and register a candidate that passes")
    p.add_argument("--log", default=str(LOG), help="the campaign log whose row --export marks")
    args = p.parse_args(argv)
    return one_line_errors(PROG, lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
