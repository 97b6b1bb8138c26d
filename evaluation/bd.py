"""Bjøntegaard delta rate, via the `bjontegaard` package, on per-target mean curves.

Kept apart from the report so a test can check it on a hand-made case: a test
curve equal to the anchor with every rate x0.8 must give -20 %.

Points that are not strictly increasing in both rate and quality (in target
order) are dropped first, as in shared/anchors/kodak_summary.md: e.g. several
targets clamped to a codec's lowest setting give repeated points that would
make the interpolation ill-posed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_POINTS = {"pchip": 2, "akima": 2, "cubic": 4}


@dataclass
class BDResult:
    """BD-rate in percent (negative = test needs fewer bits) and the quality range integrated over."""

    value: float
    overlap_lo: float
    overlap_hi: float
    n_anchor: int
    n_test: int
    note: str = ""


def monotone_points(rates: Sequence[float], quality: Sequence[float]) -> tuple[list[float], list[float]]:
    """Keep, in the given order, only points with rate and quality both above the last kept point.

    NaN points (e.g. MS-SSIM of images too small for 5 scales) are dropped too.
    """
    kept_r: list[float] = []
    kept_q: list[float] = []
    for r, q in zip(rates, quality):
        if not (math.isfinite(r) and math.isfinite(q)) or r <= 0:
            continue
        if kept_r and (r <= kept_r[-1] or q <= kept_q[-1]):
            continue
        kept_r.append(float(r))
        kept_q.append(float(q))
    return kept_r, kept_q


def bd_rate(rate_anchor: Sequence[float], q_anchor: Sequence[float], rate_test: Sequence[float],
            q_test: Sequence[float], method: str = "pchip") -> BDResult:
    """BD-rate (%) of test against anchor after dropping non-monotone points; NaN with a note if undefined."""
    import bjontegaard  # lazy: it imports matplotlib.pyplot

    ra, qa = monotone_points(rate_anchor, q_anchor)
    rt, qt = monotone_points(rate_test, q_test)
    need = MIN_POINTS.get(method, 2)
    lo = max(min(qa, default=math.nan), min(qt, default=math.nan))
    hi = min(max(qa, default=math.nan), max(qt, default=math.nan))
    if len(ra) < need or len(rt) < need:
        return BDResult(math.nan, lo, hi, len(ra), len(rt), f"fewer than {need} monotone points")
    if not hi > lo:
        return BDResult(math.nan, lo, hi, len(ra), len(rt), "quality ranges do not overlap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(np.array(ra), np.array(qa), np.array(rt), np.array(qt), method=method,
                                    require_matching_points=False, min_overlap=0)
    return BDResult(float(value), lo, hi, len(ra), len(rt))
