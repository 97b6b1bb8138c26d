"""Optional stage instrumentation, shared by the decoder and the encoder.

A `Stages` is any callable that returns a context manager for a stage name; the codec enters
`stage(stages, name)` around each named step of its work. With None (the default) that is a
`nullcontext`: nothing is timed, nothing changes. The benchmark (evaluation/bench/ops.py)
passes a timer that also records memory, so it measures the codec without patching it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

Stages = Callable[[str], AbstractContextManager]


def stage(stages: Stages | None, name: str) -> AbstractContextManager:
    return nullcontext() if stages is None else stages(name)
