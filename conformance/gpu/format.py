"""The GPU parity pack's format, shared by gpu_pack (here), gpu_run (device) and gpu_compare (here).

Why a pack: the lent accelerator has JAX but no TensorFlow, and the range decoder is a TF
custom op, so the parse cannot run there. The parse runs here; the pack carries its integer
results (symbols and mu_q, or v3's y_hat_q) and the synthesis weights (fp16, as in the
.dec.npz); the device rebuilds y_hat with the decoder's own float32 formula
(models.scale_table.dequantize / models.charm.y_hat_float, both free of TensorFlow) and
runs only the float synthesis. Hashes of the carried integers and of the rebuilt y_hat travel
too, so the device proves it synthesised from exactly what the CPU parse produced.

This module imports no TensorFlow (tests/... checks it in a fresh process): numpy, zlib, json.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np

FORMAT = 1
MANIFEST = "manifest.json"
REPORT = "gpu_report.json"
SHARD_PREFIX = "gpu-decodes-"
BAND_ROWS = 512                 # decodes travel in row bands, each compressed on its own
MiB = 1 << 20


class PackError(ValueError):
    """A pack or returned folder that cannot be used; the message is one line for the user."""


def compact(a: np.ndarray) -> np.ndarray:
    """The smallest signed integer dtype that holds every value (values unchanged): less to carry."""
    a = np.asarray(a)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return a.astype(dt)
    return a.astype(np.int64)


def int_hash(*arrays: np.ndarray) -> str:
    """16 hex digits over the values as int64, so a compacted copy hashes as its source."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, np.int64).tobytes())
    return h.hexdigest()[:16]


def float_hash(a: np.ndarray) -> str:
    """16 hex digits over float32 bytes: bit-identical y_hat on both machines, or not."""
    return hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()[:16]


def y_hat(arrays: dict[str, np.ndarray], delta_code: int) -> np.ndarray:
    """The synthesis input, with the decoder's own float32 formulas (no copy of them here)."""
    if "y_hat_q" in arrays:                                   # bitstream v3: fixed-point latents
        from models.charm import y_hat_float
        return y_hat_float(arrays["y_hat_q"].astype(np.int64))
    from models.scale_table import dequantize  # v2: s * delta + mu
    return dequantize(arrays["symbols"].astype(np.int32), arrays["mu_q"].astype(np.int32), delta_code)


def payload(arrays: dict[str, np.ndarray]) -> str:
    """The hash of a stream's carried integers (sorted keys)."""
    return int_hash(*(arrays[k] for k in sorted(arrays)))


def load_manifest(pack: str | os.PathLike) -> dict:
    p = Path(pack) / MANIFEST
    if not p.is_file():
        raise PackError(f"{pack}: no {MANIFEST} (build the pack with python -m conformance.gpu.pack)")
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise PackError(f"{p}: unreadable ({e})") from None
    if m.get("format") != FORMAT:
        raise PackError(f"{p}: pack format {m.get('format')!r}, this code reads {FORMAT}")
    return m


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise PackError(f"{path}: unreadable ({e})") from None


def model_weights(pack: str | os.PathLike, model: dict) -> list[np.ndarray]:
    """Synthesis weights in Keras order, fp16 on disk -> float32 (as models.weights._ordered)."""
    arrays = load_npz(Path(pack) / model["file"])
    keys = sorted(k for k in arrays if k.startswith("syn") and k[3:].isdigit())
    return [arrays[k].astype(np.float32) for k in keys]


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pack_band(band: np.ndarray) -> np.ndarray:
    """PNG's 'sub' filter (each byte minus its left neighbour, mod 256), then zlib: exact, and about
    a third smaller than zlib alone on decoded photographs."""
    d = np.ascontiguousarray(band).copy()
    d[:, 1:] = band[:, 1:] - band[:, :-1]
    return np.frombuffer(zlib.compress(d.tobytes(), 6), np.uint8)


def _unpack_band(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    d = np.frombuffer(zlib.decompress(data.tobytes()), np.uint8).reshape(shape)
    return np.cumsum(d, axis=1, dtype=np.uint8)


class ShardWriter:
    """uint8 decodes -> at most `max_shards` npz files of at most `limit` bytes each. A decode travels
    as row bands, each compressed on its own, so a file's size is known before it is written and
    a 4K decode may span two files. The open file is rewritten after every decode, so a killed
    run still leaves every finished decode on disk."""

    OVERHEAD = 1024                          # npz entry per band, and the index

    def __init__(self, out: Path, limit: int = 15 * MiB, max_shards: int = 6):
        self.out, self.limit, self.max_shards = Path(out), limit, max_shards
        self._cur: dict[str, np.ndarray] = {}
        self._meta: dict[str, list] = {}     # band key -> [name, full shape, first row]
        self._size = self.OVERHEAD
        self._n = 0

    def _path(self, n: int) -> Path:
        return self.out / f"{SHARD_PREFIX}{n}.npz"

    def _flush(self) -> None:
        buf = io.BytesIO()
        np.savez(buf, __index__=np.array(json.dumps(self._meta)), **self._cur)
        write_atomic(self._path(self._n), buf.getvalue())

    def add(self, name: str, img: np.ndarray) -> str | None:
        """Store one decode; returns the file name(s) it went to, or None (nothing stored) when it
        does not fit in the files left."""
        bands = [(r, _pack_band(img[r:r + BAND_ROWS])) for r in range(0, img.shape[0], BAND_ROWS)]
        n, size = self._n, self._size                     # place every band first, then commit
        place = []
        for _, b in bands:
            need = b.nbytes + self.OVERHEAD
            if need + self.OVERHEAD > self.limit:
                return None
            if size + need > self.limit:
                n, size = n + 1, self.OVERHEAD
            place.append(n)
            size += need
        if place[-1] >= self.max_shards:
            return None
        for (r, b), k in zip(bands, place):
            if k != self._n:
                self._flush()
                self._n, self._cur, self._meta, self._size = k, {}, {}, self.OVERHEAD
            key = f"{name}@{r}"
            self._cur[key] = b
            self._meta[key] = [name, list(img.shape), r]
            self._size += b.nbytes + self.OVERHEAD
        self._flush()
        return ",".join(self._path(k).name for k in sorted(set(place)))


def read_decodes(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every complete decode in the shards under folder (searched recursively: the copy back may
    nest them). A decode cut short by a killed run (bands missing) is left out."""
    bands: dict[str, dict[int, np.ndarray]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for p in sorted(Path(folder).rglob(f"{SHARD_PREFIX}*.npz")):
        arrays = load_npz(p)
        if "__index__" not in arrays:
            raise PackError(f"{p}: not a decode shard (no index)")
        for key, (name, shape, r) in json.loads(str(arrays["__index__"])).items():
            shapes[name] = tuple(shape)
            rows = min(BAND_ROWS, shape[0] - r)
            try:
                bands.setdefault(name, {})[r] = _unpack_band(arrays[key], (rows, *shape[1:]))
            except (KeyError, zlib.error, ValueError) as e:
                raise PackError(f"{p}: decode {name} is damaged ({e})") from None
    out = {}
    for name, parts in bands.items():
        if sorted(parts) == list(range(0, shapes[name][0], BAND_ROWS)):
            out[name] = np.concatenate([parts[r] for r in sorted(parts)])
    return out


def find_report(folder: str | os.PathLike) -> dict:
    hits = sorted(Path(folder).rglob(REPORT))
    if not hits:
        raise PackError(f"{folder}: no {REPORT} (was gpu_run's $OUT fetched here?)")
    try:
        return json.loads(hits[0].read_text())
    except (OSError, ValueError) as e:
        raise PackError(f"{hits[0]}: unreadable ({e})") from None
