"""The challenge's target rates: the one place that owns the list."""

from __future__ import annotations

TARGETS: tuple[float, ...] = (0.06, 0.12, 0.25, 0.50, 0.75, 1.00, 1.50, 2.00)
TOLERANCE: float = 0.15  # challenge band: |bpp / target - 1| <= 15 %


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
