"""Library entry point: decode_bytes(data) -> HxWx3 uint8, with a per-process model cache."""

from __future__ import annotations

import numpy as np

from decoder import decode as _d

_cache: dict[str, _d.ModelCache] = {}


def decode_bytes(data: bytes, registry: str | None = None) -> np.ndarray:
    from models.runtime import configure
    key = str(registry)
    if key not in _cache:
        configure()
        _cache[key] = _d.ModelCache(registry)
    return _d.decode_bytes(data, _cache[key])
