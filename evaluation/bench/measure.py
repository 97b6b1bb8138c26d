"""Inside a bench worker: peak RSS, the stage timer the codec's hooks enter, and TensorFlow's import time.

Only the standard library at module level (evaluation/bench/worker.py says why)."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """The environment of a worker or CLI process: this checkout first on PYTHONPATH, TF quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


# Modules a decoder process must not need (lazy loading / small decoder container).
ENCODER_SIDE_MODULES = ("encoder", "rate_control", "training", "models.jax_transforms", "models.entropy", "jax")
# Packages a decoder process does not need: tfc's Python package (and the TF Probability
# it imports) is replaced by tfc's op library, the Keras synthesis by plain TF ops (models/synthesis.py).
DECODER_UNNEEDED_MODULES = ("tensorflow_compression", "tensorflow_probability")


def _now() -> float:
    return time.perf_counter()


def _status_mb(key: str) -> float | None:
    """A VmXXX field of /proc/self/status in MiB, or None where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    """Resident set size right now (VmRSS), MiB; NaN where /proc is unavailable."""
    v = _status_mb("VmRSS")
    return float("nan") if v is None else v


def ru_maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """ru_maxrss in MiB (Linux reports KiB, macOS bytes)."""
    v = resource.getrusage(who).ru_maxrss
    return v / (1024.0 * 1024.0) if sys.platform == "darwin" else v / 1024.0


def peak_rss_mb() -> float:
    """This process's peak RSS, MiB: VmHWM on Linux, else ru_maxrss.

    On Linux ru_maxrss survives fork+exec: a worker started from a large parent
    (a pytest process of ~1 GB) reports the parent's size at fork time as its own
    peak. VmHWM belongs to the address space the worker created at exec, so it is
    the worker's own peak; both are recorded in the result.
    """
    v = _status_mb("VmHWM")
    return ru_maxrss_mb() if v is None else v


class Stages:
    """Accumulates seconds per named stage while `active`.

    `stages(name)` is a context manager: the codec's own hooks (models/stages.py: decoder.decode.decode_bytes(...,
    stages=...) and encoder.encode.EncoderModels.stages) both time through it.
    """

    def __init__(self) -> None:
        self.acc: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.peak_after: dict[str, float] = {}   # peak RSS (MiB) when the stage last returned
        self.rss_before: dict[str, float] = {}   # VmRSS (MiB) when the stage was last entered
        self.active = False
        self.record_mem = True                   # memory per stage: first run only (the peak is monotone)

    def reset(self) -> None:
        self.acc, self.calls = {}, {}

    def add(self, name: str, dt: float) -> None:
        if self.active:
            self.acc[name] = self.acc.get(name, 0.0) + dt
            self.calls[name] = self.calls.get(name, 0) + 1

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.active and self.record_mem:
            self.rss_before[name] = current_rss_mb()
        t = _now()
        try:
            yield
        finally:
            self.add(name, _now() - t)
            if self.active and self.record_mem:
                self.peak_after[name] = peak_rss_mb()


def _summ(xs: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs), "first_s": xs[0]}


DECODE_TOP = ("parse", "dequantize", "synthesis", "to_uint8")
ENCODE_TOP = ("analysis", "code", "reconstruct", "refine")


def _with_other(acc: dict[str, float], total: float, top: tuple[str, ...]) -> dict[str, float]:
    """This run's stage times plus 'other' = total minus the top-level stages (and the rest of parse)."""
    out = {**acc, "other": total - sum(acc.get(k, 0.0) for k in top)}
    if "parse" in acc:
        out["parse.rest"] = acc["parse"] - sum(v for k, v in acc.items() if k.startswith("parse."))
    return out


def _stage_medians(per_run: list[dict[str, float]]) -> dict[str, float]:
    names = sorted({k for d in per_run for k in d})
    return {k: statistics.median([d.get(k, 0.0) for d in per_run]) for k in names}


def _import_tf(res: dict, decoder: bool = False) -> None:
    """numpy, TensorFlow and (encoder only) tensorflow_compression, each timed.

    The decoder imports TensorFlow as the decoder does (models.runtime.import_tensorflow: without
    the JAX import TensorFlow makes on the side) and never the tensorflow_compression package: its
    range coder ops are loaded from tfc's op library alone (models.coding._ops).
    """
    t = _now()
    import numpy  # noqa: F401
    res["imports"]["numpy"] = _now() - t
    t = _now()
    if decoder:
        from models.runtime import import_tensorflow
        import_tensorflow()
    else:
        import tensorflow  # noqa: F401
    res["imports"]["tensorflow"] = _now() - t
    if decoder:
        return
    t = _now()
    import tensorflow_compression  # noqa: F401
    res["imports"]["tensorflow_compression"] = _now() - t
