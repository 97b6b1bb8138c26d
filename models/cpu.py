"""What this CPU is and computes natively: the campaign log records it; the trainer and the
encoder's refinement pick bf16 from it.

bf16 figures from one machine do not carry to another: without AVX512-BF16 (or AMX) bf16 is
emulated and slower than float32.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:                       # not Linux: no flags, so float32
        return []


def flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return next((set(line.split(":", 1)[1].split()) for line in _cpuinfo() if line.startswith("flags")), set())


def native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    return bool(flags() & {"avx512_bf16", "amx_bf16"})


def onednn_on() -> bool:
    """TF 2.14 turns oneDNN on by default on CPUs with AVX512-VNNI (or AMX); TF_ENABLE_ONEDNN_OPTS overrides."""
    env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if env is not None:
        return env not in ("0", "false", "False")
    return bool(flags() & {"avx512_vnni", "amx_tile", "avx512_bf16"})


def model() -> str:
    """The CPU's model name, core count and its bf16/VNNI/AMX flags."""
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
                platform.processor() or platform.machine())
    tags = [f for f in ("avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags()]
    return f"{name} x{os.cpu_count()}" + (f" ({' '.join(tags)})" if tags else "")
