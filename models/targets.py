"""The challenge's target rates: the one place that owns the list."""

from __future__ import annotations

import math

TARGETS: tuple[float, ...] = (0.06, 0.12, 0.25, 0.50, 0.75, 1.00, 1.50, 2.00)
TOLERANCE: float = 0.15  # challenge band: |bpp / target - 1| <= 15 %


class TargetError(ValueError):
    """A target the user typed is not usable; the message is one line."""


def parse_target(text: str) -> float:
    """A target bpp from a command line: any positive finite number (refuses 0, negatives, NaN, inf)."""
    try:
        t = float(text)
    except ValueError:
        raise TargetError(f"target {text!r} is not a number") from None
    if not math.isfinite(t) or t <= 0:
        raise TargetError(f"target must be a positive finite bpp, got {text}")
    return t


def parse_targets(text: str, challenge_only: bool = False) -> list[float]:
    """'all' (the eight challenge targets) or a comma list; with challenge_only, each must be one of TARGETS."""
    if text.strip().lower() == "all":
        return list(TARGETS)
    out = [parse_target(t) for t in text.split(",") if t.strip()]
    if challenge_only:
        bad = [t for t in out if not any(abs(t - c) < 1e-9 for c in TARGETS)]
        if bad:
            raise TargetError(f"{bad[0]:g} is not a challenge target ({', '.join(f'{t:g}' for t in TARGETS)})")
        out = sorted({next(c for c in TARGETS if abs(t - c) < 1e-9) for t in out})
    return out


def target_index(bpp: float) -> int:
    """Index of a challenge target, so that headers can code it in 3 bits."""
    for i, t in enumerate(TARGETS):
        if abs(t - bpp) < 1e-9:
            return i
    raise ValueError(f"{bpp} is not a challenge target; choose from {', '.join(f'{t:.2f}' for t in TARGETS)}")


def rate_code(bpp: float) -> str:
    """Challenge file-name code: bpp x 100, three digits (0.06 -> '006')."""
    return f"{int(round(bpp * 100)):03d}"


def within_band(achieved: float, target: float, tol: float = TOLERANCE) -> bool:
    return abs(achieved / target - 1.0) <= tol
