"""Export a trained model to the codec's file format and (optionally) register it.

python -m models.export --state models/checkpoints/base.npz --name base --register all
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models import weights as W
from models.targets import TARGETS

WEIGHTS_DIR = W.MODELS_DIR / "weights"


def export(model, name: str, extra: dict | None = None, out_dir: Path = WEIGHTS_DIR) -> Path:
    """Quantise the hyper-synthesis, build CDF tables, write .dec/.enc files."""
    from models import entropy, intnet
    prefix = Path(out_dir) / name
    h = W.save_model(
        prefix, model.widths.as_dict(),
        synthesis=[w.numpy() for w in model.synthesis.weights],
        intnet=intnet.from_keras(model.hyper_synthesis),
        z_table=entropy.z_table(model.z_prior), y_table=entropy.y_table(),
        analysis=[w.numpy() for w in model.analysis.weights],
        hyper_analysis=[w.numpy() for w in model.hyper_analysis.weights],
        info=extra or {})
    return prefix


def register(registry: Path, prefix: Path, name: str, targets: list[float], trained: bool, note: str = "") -> None:
    """Point the given targets at this model, keeping other entries."""
    import yaml
    rows = []
    if registry.exists():
        rows = (yaml.safe_load(registry.read_text()) or {}).get("models", [])
    rows = [r for r in rows if float(r["target"]) not in targets]
    rel = Path(prefix).resolve().relative_to(registry.resolve().parent) if Path(prefix).resolve().is_relative_to(
        registry.resolve().parent) else Path(prefix).resolve()
    h = W.file_hash(Path(str(prefix) + ".dec.npz"))
    for t in targets:
        rows.append({"target": float(t), "name": name, "weights": str(rel), "hash": h, "trained": trained,
                     "note": note})
    rows.sort(key=lambda r: float(r["target"]))
    W.write_registry(registry, rows, "# Target -> model. Written by `python -m models.export --register`.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state", help="resume-state .npz written by models.train (omit for random init)")
    p.add_argument("--name", required=True, help="model name; files go to OUT_DIR/<name>.{dec,enc}.npz")
    p.add_argument("--num-filters", type=int, default=128, help="N, used when --state is omitted")
    p.add_argument("--latent-channels", type=int, default=192, help="M, used when --state is omitted")
    p.add_argument("--out-dir", default=str(WEIGHTS_DIR), help="where model files are written")
    p.add_argument("--register", default="", help="comma-separated targets (or 'all') to point at this model")
    p.add_argument("--registry", default=str(W.DEFAULT_REGISTRY), help="registry YAML to update")
    p.add_argument("--note", default="", help="free text stored in the registry entry")
    p.add_argument("--slim-state", action="store_true",
                   help="after exporting, drop from --state the tensors the export already holds (models/state.py)")
    args = p.parse_args(argv)

    from models import state
    from models.hyperprior import Hyperprior, Widths
    info: dict = {"trained": False}
    widths = Widths(args.num_filters, args.latent_channels)
    if args.state:
        meta = state.read_meta(args.state)
        cfg = meta["config"]
        widths = Widths(cfg["num_filters"], cfg["latent_channels"])
        info = {"trained": meta["step"] > 0, "step": meta["step"], "config": cfg}
    model = Hyperprior(widths)
    if args.state:
        state.load(model, Path(args.state))
    prefix = export(model, args.name, info, Path(args.out_dir))
    print(f"exported {args.name}: {prefix}.dec.npz ({W.file_hash(str(prefix) + '.dec.npz')})")
    if args.state and args.slim_state:
        before, after = state.slim(model, Path(args.state), prefix)
        print(f"slimmed {args.state}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    if args.register:
        targets = list(TARGETS) if args.register == "all" else [float(t) for t in args.register.split(",")]
        register(Path(args.registry), prefix, args.name, targets, bool(info["trained"]), args.note)
        print(f"registered for {', '.join(f'{t:.2f}' for t in targets)} in {args.registry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
