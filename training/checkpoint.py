"""Full run checkpoints: parameters, Adam moments and the loop's scalars, in files of at most 16 MiB.

Why shards: the accelerator machine returns at most 8 files of 16 MiB (64 MiB in all).
An N=128/M=192 model is ~26 MB of float32 parameters; its Adam moments are kept as
bfloat16 (half the bytes; the second moment needs bf16's exponent range, fp16 would
flush it to zero), so a whole checkpoint is ~52 MB in 4 shards plus meta.json.

Layout of a checkpoint folder:
  meta.json               step, R_t, beta, rng key, history, lineage, config, shard list
  shard-NN.npz            arrays keyed "p/<param>" (float32) and "o/<leaf index>" (bf16 bits)

A save writes a new folder beside the old one and renames it into place, so a run
killed mid-save keeps the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from models.cli import ArgumentParser, one_line_errors

SHARD_BYTES = 15 * 2 ** 20         # under the 16 MiB per-file limit with npz overhead

PROG = "python -m training.checkpoint"


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    import ml_dtypes
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)


def _from_bf16_bits(a: np.ndarray) -> np.ndarray:
    import ml_dtypes
    return a.view(ml_dtypes.bfloat16).astype(np.float32)


def save(folder: Path, params: dict, opt_leaves: list, meta: dict) -> None:
    """Write the checkpoint atomically. opt_leaves: the flattened optimiser state (jax.tree_util order)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays: list[tuple[str, np.ndarray]] = [(f"p/{k}", np.asarray(v, np.float32)) for k, v in sorted(params.items())]
    for i, leaf in enumerate(opt_leaves):
        a = np.asarray(leaf)
        arrays.append((f"o/{i:04d}", _bf16_bits(a) if a.dtype.kind == "f" and a.ndim else a))
    shards: list[list[str]] = []
    cur: dict[str, np.ndarray] = {}
    size = 0

    def flush() -> None:
        nonlocal cur, size
        if cur:
            name = f"shard-{len(shards):02d}.npz"
            np.savez(tmp / name, **cur)
            shards.append(sorted(cur))
            cur, size = {}, 0
    for key, a in arrays:
        if a.nbytes > SHARD_BYTES:
            raise ValueError(f"{key}: {a.nbytes} bytes exceed one shard ({SHARD_BYTES})")
        if size + a.nbytes > SHARD_BYTES:
            flush()
        cur[key] = a
        size += a.nbytes
    flush()
    meta = {**meta, "shards": len(shards), "opt_leaves": len(opt_leaves),
            "opt_bf16": [i for i, leaf in enumerate(opt_leaves)
                         if np.asarray(leaf).dtype.kind == "f" and np.asarray(leaf).ndim]}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def exists(folder: Path) -> bool:
    return (Path(folder) / "meta.json").is_file()


def load(folder: Path) -> tuple[dict, list[np.ndarray], dict]:
    """(params, optimiser leaves, meta)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    params: dict[str, np.ndarray] = {}
    opt: dict[int, np.ndarray] = {}
    bf16 = set(meta["opt_bf16"])
    for s in range(meta["shards"]):
        with np.load(folder / f"shard-{s:02d}.npz") as f:
            for key in f.files:
                kind, name = key.split("/", 1)
                if kind == "p":
                    params[name] = f[key]
                else:
                    i = int(name)
                    opt[i] = _from_bf16_bits(f[key]) if i in bf16 else f[key]
    if len(opt) != meta["opt_leaves"]:
        raise ValueError(f"{folder}: {len(opt)} optimiser leaves, meta says {meta['opt_leaves']}")
    return params, [opt[i] for i in range(len(opt))], meta


def files(folder: Path) -> list[Path]:
    return sorted(Path(folder).iterdir())


def import_run(src: Path, name: str, runs_dir: Path, state_dir: Path) -> str:
    """A run folder returned by the device (ckpt/, curve.csv, train.log) -> runs/<name>/ and the committed state."""
    from training import state
    src = Path(src)
    params, _, meta = load(src / "ckpt")
    dst = Path(runs_dir) / name
    dst.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dst / "ckpt", ignore_errors=True)
    shutil.copytree(src / "ckpt", dst / "ckpt")
    for extra in ("curve.csv", "train.log"):
        if (src / extra).is_file():
            with (dst / f"device-{extra}").open("a") as f:       # every device trip appends its curve and log
                f.write((src / extra).read_text())
    keep = {k: v for k, v in meta.items() if k not in ("step", "config", "shards", "opt_leaves", "opt_bf16")}
    state.save(params, meta["step"], Path(state_dir) / f"{name}.npz", meta["config"], keep)
    run = meta.get("runs", [{}])[-1]
    return (f"imported {name} at step {meta['step']} into {dst / 'ckpt'} and {Path(state_dir) / (name + '.npz')}; "
            f"last run: {run.get('device')}, {run.get('seconds')} s, steps {run.get('from_step')}->{run.get('to_step')} "
            f"({run.get('steps_per_s')} steps/s), batch {run.get('batch')} x {run.get('patch')}^2")


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    import argparse
    import sys
    root = Path(__file__).resolve().parent.parent
    p = ArgumentParser(prog="python -m training.checkpoint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    imp = sub.add_parser("import", help="take in a run folder returned by the accelerator")
    imp.add_argument("src", help="folder holding ckpt/ (and curve.csv, train.log)")
    imp.add_argument("--name", required=True, help="model name (runs/<name>, models/checkpoints/<name>.npz)")
    imp.add_argument("--runs-dir", default=str(root / "runs"))
    imp.add_argument("--state-dir", default=str(root / "models" / "checkpoints"))
    args = p.parse_args(argv)
    try:
        print(import_run(Path(args.src), args.name, Path(args.runs_dir), Path(args.state_dir)))
    except (OSError, ValueError, KeyError) as e:
        print(f"training.checkpoint: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
