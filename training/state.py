"""Committed resume state of a model: fp16 weights, step, and the rate-steering history.

One .npz per model (models/checkpoints/<name>.npz): tensors w000, w001, ... in the
order of models/jax_transforms.layout(), plus a JSON `meta` (step, config, history,
lineage, R_t, beta, wall seconds). It holds no optimiser moments: resuming from it
restarts Adam's moments, which costs a few hundred steps of warm-up, not a restart.
The full optimiser state of a run lives in training/checkpoint.py's folders.

A committed state would otherwise repeat most of the exported model: analysis,
synthesis and hyper-analysis are stored as fp16 in both. `slim()` drops those tensors
and records where they live in the export plus a hash of their content, so a committed
model costs ~14 MB of git history instead of ~21 MB. Loading a slim state refuses an
export whose tensors changed, rather than resuming from mismatched weights.

No TensorFlow here: the device that trains has none.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from models import jax_transforms as J

MODELS_DIR = Path(J.__file__).resolve().parent
# Transforms whose weights the export keeps in fp16: (transform, export file, key prefix).
SHARED = (("analysis", "enc", "ana"), ("synthesis", "dec", "syn"), ("hyper_analysis", "enc", "hya"))


def _write(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["meta"])), {k: f[k] for k in f.files if k != "meta"}


def save(params: J.Params, step: int, path: Path, config: dict, extra: dict | None = None) -> None:
    """Full state, written atomically (a run killed mid-write leaves the previous state)."""
    items = J.ordered(params)
    arrays = {f"w{i:03d}": np.asarray(v, np.float32).astype(np.float16) for i, (_, v) in enumerate(items)}
    meta = {"step": int(step), "names": [k for k, _ in items], "config": config, **(extra or {})}
    _write(Path(path), meta, arrays)


def _shared_keys(widths: tuple[int, int]) -> dict[str, str]:
    """State key -> "<enc|dec>:<export key>" for every tensor the export also stores."""
    keys = [k for k, _ in J.layout(*widths)]
    out = {}
    for transform, kind, prefix in SHARED:
        j = 0
        for i, k in enumerate(keys):
            if k.startswith(transform + "/"):
                out[f"w{i:03d}"] = f"{kind}:{prefix}{j:03d}"
                j += 1
    return out


def _digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float16).tobytes())
    return h.hexdigest()[:16]


def _export_arrays(prefix: Path, refs: dict[str, str]) -> dict[str, np.ndarray]:
    files = {kind: _read(prefix.with_name(f"{prefix.name}.{kind}.npz"))[1] for kind in ("enc", "dec")}
    return {k: files[ref.split(":")[0]][ref.split(":")[1]] for k, ref in refs.items()}


def widths(meta: dict) -> tuple[int, int]:
    cfg = meta["config"]
    return int(cfg["num_filters"]), int(cfg["latent_channels"])


def slim(path: Path, export_prefix: Path) -> tuple[int, int]:
    """Rewrite a full state so shared tensors are read from the export; returns (bytes before, after).

    Refuses when the export's tensors differ from the state's (exported from another state).
    """
    path, export_prefix = Path(path), Path(export_prefix)
    meta, arrays = _read(path)
    if "export" in meta:
        return path.stat().st_size, path.stat().st_size
    refs = _shared_keys(widths(meta))
    theirs = _export_arrays(export_prefix, refs)
    for k in refs:
        if not np.array_equal(arrays[k], theirs[k].astype(np.float16)):
            raise ValueError(f"{path}: tensor {k} differs from the export {export_prefix}; export this state first")
    try:
        rel = export_prefix.resolve().relative_to(MODELS_DIR)
    except ValueError:
        rel = export_prefix.resolve()
    meta["export"] = {"prefix": str(rel), "tensors": refs, "digest": _digest([arrays[k] for k in sorted(refs)])}
    before = path.stat().st_size
    _write(path, meta, {k: v for k, v in arrays.items() if k not in refs})
    return before, path.stat().st_size


def load(path: Path) -> tuple[J.Params, dict]:
    """(float32 parameters, metadata); a slim state's shared tensors are read from its export.

    Also reads the states written by the retired TF trainer: same order, Keras names.
    """
    path = Path(path)
    meta, arrays = _read(path)
    if "export" in meta:
        ex = meta["export"]
        prefix = Path(ex["prefix"]) if Path(ex["prefix"]).is_absolute() else MODELS_DIR / ex["prefix"]
        shared = _export_arrays(prefix, ex["tensors"])
        if _digest([shared[k] for k in sorted(shared)]) != ex["digest"]:
            raise ValueError(f"{path}: the export {prefix} no longer holds this state's weights "
                             "(re-exported from another state?)")
        arrays.update(shared)
    items = J.layout(*widths(meta))
    if len(meta["names"]) != len(items):
        raise ValueError(f"{path}: {len(meta['names'])} tensors, the model has {len(items)}")
    params = {}
    for i, (key, shape) in enumerate(items):
        a = arrays[f"w{i:03d}"]
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{path}: tensor {i} ({meta['names'][i]}) has shape {a.shape}, {key} needs {shape}")
        params[key] = a.astype(np.float32)
    return params, meta


def read_meta(path: Path) -> dict:
    with np.load(Path(path), allow_pickle=False) as f:
        return json.loads(str(f["meta"]))
