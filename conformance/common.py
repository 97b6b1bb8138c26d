"""Small helpers shared by the checks: paths, image maths, subprocess environments.

Kept free of TensorFlow imports so that `python -m conformance --help` and the
robustness worker's stand-ins start fast.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from evaluation.datasets import KODAK  # noqa: F401 - re-exported: conformance modules take the path from here

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = Path(__file__).resolve().parent / "streams"
# Bitstream v3 goldens (a committed tiny v3 model, its registry and three streams; tests/test_charm_codec.py):
# determinism and parity always check these too, so a v3 regression fails the suite whatever the registry.
V3_GOLDEN_DIR = ROOT / "tests" / "expected" / "charm"


def sha16(data: bytes) -> str:
    """Short content id used in reports (collisions are irrelevant at this scale)."""
    return hashlib.sha256(data).hexdigest()[:16]


def pixels_sha16(rgb: np.ndarray) -> str:
    """Hash of the pixel values and shape, independent of how the PNG was compressed."""
    a = np.ascontiguousarray(rgb, np.uint8)
    return sha16(repr(a.shape).encode() + a.tobytes())


# The parse-level integers of a stream that must be identical wherever it is decoded, as hashes.
# symbols: the decoder's own `symbols_sha256_16` (z_hat, scale indexes, symbols); scale_idx: the scale
# indexes alone; mu_q: the integer hyper-synthesis mean (Q8); y_hat_q: bitstream v3's decoded latents
# (Q8, the slice loop's output; None for v2, whose latents are s * delta + mu_q in float).
PARSE_INTS = ("symbols", "scale_idx", "mu_q", "y_hat_q")


def parse_ints(parsed) -> dict:
    """{"version", *PARSE_INTS} for a decoder.decode.Parsed: the decoder's own `--info` figures."""
    return parsed.integer_hashes()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR over all channels, peak 255; inf when identical (evaluation.metrics owns the formula)."""
    from evaluation.metrics import psnr as metric
    return metric(a, b, cap=math.inf)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape:
        return 255
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max(initial=0))


def fmt_db(x: float | None) -> str:
    if x is None:
        return "-"
    return "identical" if math.isinf(x) else f"{x:.2f}"


def json_safe(x):
    """inf/nan are not JSON: write them as strings so report.json stays strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return json_safe(float(x))
    return x


def child_env(extra: dict[str, str] | None = None, drop: Iterable[str] = ()) -> dict[str, str]:
    """Environment for a child python: repo on PYTHONPATH, quiet TF, plus overrides."""
    env = dict(os.environ)
    for k in drop:
        env.pop(k, None)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(extra or {})
    return env


def python() -> str:
    return sys.executable


def load_png(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
