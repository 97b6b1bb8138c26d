"""Resume state of a training run: fp16 weights, step, and the rate-steering history.

A committed state would otherwise repeat most of the exported model: analysis, synthesis
and hyper-analysis are stored as fp16 in both. `slim()` drops those tensors from the state
and records where they live in the export plus a hash of their content, so a committed
model costs ~14 MB of git history instead of ~21 MB. Loading a slim state refuses an
export whose tensors changed, rather than resuming from mismatched weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
# Sub-networks whose weights the export keeps in fp16 (attribute, export file, key prefix).
SHARED = (("analysis", "enc", "ana"), ("synthesis", "dec", "syn"), ("hyper_analysis", "enc", "hya"))


def _write(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["meta"])), {k: f[k] for k in f.files if k != "meta"}


def save(model, step: int, path: Path, config: dict, extra: dict | None = None) -> None:
    """Full state, written atomically (a run killed mid-write leaves the previous state)."""
    arrays = {f"w{i:03d}": w.numpy().astype(np.float16) for i, w in enumerate(model.weights)}
    meta = {"step": int(step), "names": [w.name for w in model.weights], "config": config, **(extra or {})}
    _write(Path(path), meta, arrays)


def _shared_keys(model) -> dict[str, str]:
    """State key -> "<enc|dec>:<export key>" for every tensor the export also stores."""
    index = {w.ref(): i for i, w in enumerate(model.weights)}
    out = {}
    for attr, kind, prefix in SHARED:
        for j, w in enumerate(getattr(model, attr).weights):
            out[f"w{index[w.ref()]:03d}"] = f"{kind}:{prefix}{j:03d}"
    return out


def _digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float16).tobytes())
    return h.hexdigest()[:16]


def _export_arrays(prefix: Path, refs: dict[str, str]) -> dict[str, np.ndarray]:
    files = {kind: _read(prefix.with_name(f"{prefix.name}.{kind}.npz"))[1] for kind in ("enc", "dec")}
    return {k: files[ref.split(":")[0]][ref.split(":")[1]] for k, ref in refs.items()}


def slim(model, path: Path, export_prefix: Path) -> tuple[int, int]:
    """Rewrite a full state so shared tensors are read from the export; returns (bytes before, after).

    Refuses when the export's tensors differ from the state's (exported from another state).
    """
    path, export_prefix = Path(path), Path(export_prefix)
    meta, arrays = _read(path)
    if "export" in meta:
        return path.stat().st_size, path.stat().st_size
    refs = _shared_keys(model)
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


def load(model, path: Path) -> dict:
    """Assign the stored weights (reading a slim state's shared tensors from its export); returns the metadata."""
    path = Path(path)
    meta, arrays = _read(path)
    if len(meta["names"]) != len(model.weights):
        raise ValueError(f"{path}: {len(meta['names'])} tensors, model has {len(model.weights)}")
    if "export" in meta:
        ex = meta["export"]
        prefix = Path(ex["prefix"]) if Path(ex["prefix"]).is_absolute() else MODELS_DIR / ex["prefix"]
        shared = _export_arrays(prefix, ex["tensors"])
        if _digest([shared[k] for k in sorted(shared)]) != ex["digest"]:
            raise ValueError(f"{path}: the export {prefix} no longer holds this state's weights "
                             "(re-exported from another state?)")
        arrays.update(shared)
    for i, w in enumerate(model.weights):
        w.assign(arrays[f"w{i:03d}"].astype(w.dtype.as_numpy_dtype))
    return meta


def read_meta(path: Path) -> dict:
    with np.load(Path(path), allow_pickle=False) as f:
        return json.loads(str(f["meta"]))
