"""Export trained parameters to the codec's model files and (optionally) register them.

python -m training.export --state models/checkpoints/base.npz --name base --register all
python -m training.export --checkpoint runs/base/ckpt --name base        # a JAX run checkpoint
python -m training.export --name tiny --num-filters 8 --latent-channels 8   # random init (tests, containers)

The bitstream does not change: the files are those the codec loads today. Runs with
TensorFlow (the z CDF tables are built by tfc's own entropy model), so on this machine,
not on the accelerator.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from models import jax_transforms as J
from models import weights as W
from models.cli import ArgumentParser, one_line_errors
from models.targets import TARGETS

WEIGHTS_DIR = W.MODELS_DIR / "weights"

PROG = "python -m training.export"


def hyper_synthesis_layers(params: J.Params) -> list[tuple[str, np.ndarray, np.ndarray, bool]]:
    """(kind, kernel, bias, relu) per layer, for models/intnet.from_float."""
    p = {k: np.asarray(v) for k, v in params.items()}
    hs = "hyper_synthesis"
    return [("deconv", p[f"{hs}/deconv_0/kernel"], p[f"{hs}/deconv_0/bias"], True),
            ("deconv", p[f"{hs}/deconv_1/kernel"], p[f"{hs}/deconv_1/bias"], True),
            ("conv", p[f"{hs}/conv_2/kernel"], p[f"{hs}/conv_2/bias"], False)]


def tfc_prior(params: J.Params):
    """A tfc.NoisyDeepFactorized holding these parameters (the density the z table is built from)."""
    import tensorflow_compression as tfc
    n, _ = J.widths_of(params)
    prior = tfc.NoisyDeepFactorized(batch_shape=(n,))
    base = prior.base
    for group, attr in (("matrix", "_matrices"), ("bias", "_biases"), ("factor", "_factors")):
        for i, var in enumerate(getattr(base, attr)):
            var.assign(np.asarray(params[f"z_prior/{group}_{i}"], np.float32))
    return prior


def export(params: J.Params, name: str, extra: dict | None = None, out_dir: Path = WEIGHTS_DIR) -> Path:
    """Quantise the hyper-synthesis, build the CDF tables, write <out_dir>/<name>.{dec,enc}.npz."""
    from models import entropy, intnet
    n, m = J.widths_of(params)
    prefix = Path(out_dir) / name
    W.save_model(
        prefix, {"num_filters": n, "latent_channels": m},
        synthesis=[np.asarray(w) for w in J.sub(params, "synthesis")],
        intnet=intnet.from_float(hyper_synthesis_layers(params)),
        z_table=entropy.z_table(tfc_prior(params)), y_table=entropy.y_table(),
        analysis=[np.asarray(w) for w in J.sub(params, "analysis")],
        hyper_analysis=[np.asarray(w) for w in J.sub(params, "hyper_analysis")],
        info=extra or {})
    return prefix


def export_v3(params: J.Params, name: str, extra: dict | None = None, out_dir: Path = WEIGHTS_DIR) -> Path:
    """A bitstream-v3 model: the v2 files plus the integer slice networks in the decoder file.

    The v2 export runs unchanged; models/weights.add_slice_nets then rewrites the .dec.npz with the
    slice networks and `bitstream: 3` in its meta, so the file hash (the model's identity in the
    stream header) covers them.
    """
    from training.charm import to_int
    prefix = export({k: v for k, v in params.items() if not k.startswith("charm/")}, name, extra, out_dir)
    W.add_slice_nets(Path(str(prefix) + ".dec.npz"), to_int(params))
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
    W.write_registry(registry, rows, "# Target -> model. Written by `python -m training.export --register`.")


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--state", help="committed resume state .npz (models/checkpoints/<name>.npz)")
    src.add_argument("--checkpoint", help="run checkpoint folder written by training.train (runs/<name>/ckpt)")
    p.add_argument("--name", required=True, help="model name; files go to OUT_DIR/<name>.{dec,enc}.npz")
    p.add_argument("--num-filters", type=int, default=128, help="N, for a random init (no --state/--checkpoint)")
    p.add_argument("--latent-channels", type=int, default=192, help="M, for a random init")
    p.add_argument("--seed", type=int, default=0, help="seed of a random init")
    p.add_argument("--out-dir", default=str(WEIGHTS_DIR), help="where model files are written")
    p.add_argument("--register", default="", help="comma-separated targets (or 'all') to point at this model")
    p.add_argument("--registry", default=str(W.DEFAULT_REGISTRY), help="registry YAML to update")
    p.add_argument("--note", default="", help="free text stored in the registry entry")
    p.add_argument("--slim-state", action="store_true",
                   help="after exporting, drop from --state the tensors the export already holds (training/state.py)")
    args = p.parse_args(argv)
    return one_line_errors(PROG, lambda: _main(args))


def _main(args) -> int:
    from training import checkpoint, state
    info: dict = {"trained": False}
    if args.state:
        params, meta = state.load(Path(args.state))
        info = {"trained": meta["step"] > 0, "step": meta["step"], "config": meta["config"]}
    elif args.checkpoint:
        params, _, meta = checkpoint.load(Path(args.checkpoint))
        info = {"trained": meta["step"] > 0, "step": meta["step"], "config": meta["config"]}
    else:
        import jax
        params = {k: np.asarray(v) for k, v in
                  J.init(jax.random.PRNGKey(args.seed), args.num_filters, args.latent_channels).items()}
    prefix = export(params, args.name, info, Path(args.out_dir))
    print(f"exported {args.name}: {prefix}.dec.npz ({W.file_hash(str(prefix) + '.dec.npz')})")
    if args.state and args.slim_state:
        before, after = state.slim(Path(args.state), prefix)
        print(f"slimmed {args.state}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    if args.register:
        targets = list(TARGETS) if args.register == "all" else [float(t) for t in args.register.split(",")]
        register(Path(args.registry), prefix, args.name, targets, bool(info["trained"]), args.note)
        print(f"registered for {', '.join(f'{t:.2f}' for t in targets)} in {args.registry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
