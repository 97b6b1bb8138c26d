"""Rate matching: search a codec's knob so its file hits a target bpp.

One function serves every anchor codec, so all of them are matched by the same
rule (no per-codec copies that could drift apart):

* search: integer knobs are bisected for the boundary between "at or below the
  target" and "above it"; a knob that is itself a rate request (JPEG 2000) starts
  at the target and is rescaled by target/achieved until within 1 % (or in
  band after one correction, or a rate repeats: the codestream's rate moves in
  steps).
* choice, among every setting tried for this image (earlier targets included):
  the settings within +-TOLERANCE, closest to the target, ties to the higher
  quality; if none is within, the highest-quality setting below the band (never
  one above +TOLERANCE); if even the lowest setting overshoots, that lowest
  setting, flagged as out of band.
* an encoder that fails at an end of its range (libvvenc here rejects QP <= 5
  on kodim13: over 7.7 bpp) has that end walked inward; the failed settings are
  kept in `TrialCache.failed`. A failure inside the searched range is an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from evaluation.codecs import Knob
from evaluation.metrics import bpp as bits_per_pixel
from models.targets import TOLERANCE, within_band

PROPORTIONAL_STOP = 0.01  # a rate-request knob stops once within 1 % of the target
MAX_PROPORTIONAL_STEPS = 8
MAX_BISECTION_STEPS = 40
EXTREME_RETRIES = 4       # an end of the knob's range that fails to encode is walked inward 1, 2, 4, 8 steps


@dataclass
class Trial:
    """One encode: the knob, its bitstream, rate and encode wall time."""

    knob: float
    data: bytes
    bpp: float
    enc_s: float


@dataclass
class Match:
    """The chosen setting for one target."""

    knob: float
    data: bytes
    bpp: float
    within_band: bool
    enc_s: float
    calls: int  # encoder calls issued for this target (settings cached from earlier targets are free)


class TrialCache:
    """Every encode of one image with one codec, shared by all targets of that image."""

    def __init__(self, encode: Callable[[float], bytes], width: int, height: int) -> None:
        self._encode = encode
        self.width, self.height = width, height
        self.trials: dict[float, Trial] = {}
        self.failed: dict[float, str] = {}
        self.calls = 0

    def get(self, knob: float) -> Trial:
        if knob not in self.trials:
            t0 = time.perf_counter()
            data = self._encode(knob)
            dt = time.perf_counter() - t0
            self.calls += 1
            self.trials[knob] = Trial(knob, data, bits_per_pixel(len(data), self.width, self.height), dt)
        return self.trials[knob]


def choose(trials: list[Trial], target: float, increasing: bool, tol: float = TOLERANCE) -> Trial:
    """The selection rule described in the module docstring."""
    if not trials:
        raise ValueError("no trials to choose from")

    def quality(t: Trial) -> float:
        return t.knob if increasing else -t.knob

    inside = [t for t in trials if within_band(t.bpp, target, tol)]
    if inside:
        return min(inside, key=lambda t: (abs(t.bpp / target - 1.0), -quality(t)))
    below = [t for t in trials if t.bpp < target]
    if below:
        return max(below, key=lambda t: (quality(t), t.bpp))
    return min(trials, key=lambda t: (t.bpp, quality(t)))


def _bisect(cache: TrialCache, knob: Knob, target: float) -> None:
    """Try settings until the boundary 'bpp <= target' vs '> target' is pinned to adjacent settings."""
    sign = 1.0 if knob.increasing else -1.0  # q = sign * knob grows with the rate
    q_lo, q_hi = sorted((sign * knob.lo, sign * knob.hi))
    step = 1.0 if knob.integer else 1e-3 * (q_hi - q_lo)

    def at(q: float) -> Trial:
        return cache.get(sign * q)

    def at_end(q: float, inward: float) -> Trial:
        for i in range(EXTREME_RETRIES + 1):
            try:
                return at(q)
            except Exception as exc:  # noqa: BLE001 - any encoder failure; re-raised when retries run out
                cache.failed[sign * q] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                nxt = q + inward * step * (1 << i)
                if i == EXTREME_RETRIES or not q_lo <= nxt <= q_hi:
                    raise
                q = float(round(nxt)) if knob.integer else nxt
        raise AssertionError("unreachable")

    def bracket() -> tuple[float | None, float | None]:
        qs = [(sign * t.knob, t.bpp) for t in cache.trials.values()]
        below = [q for q, b in qs if b <= target]
        above = [q for q, b in qs if b > target]
        return (max(below) if below else None), (min(above) if above else None)

    a, b = bracket()
    if a is None:
        if at_end(q_lo, +1.0).bpp > target:
            return  # even the lowest setting overshoots
        a, b = bracket()
    if b is None:
        if at_end(q_hi, -1.0).bpp <= target:
            return  # even the highest setting stays at or below the target
        a, b = bracket()
    for _ in range(MAX_BISECTION_STEPS):
        if a is None or b is None or b - a <= step:
            return
        mid = (a + b) / 2.0
        mid = float(round(mid)) if knob.integer else mid
        if mid in (a, b):
            return
        at(mid)
        a, b = bracket()


def _rescale(cache: TrialCache, knob: Knob, target: float) -> None:
    """For a knob that requests a rate: start at the target, rescale by target/achieved."""
    k = min(max(target, knob.lo), knob.hi)
    seen: set[float] = set()
    for step in range(MAX_PROPORTIONAL_STEPS):
        t = cache.get(k)
        if abs(t.bpp / target - 1.0) <= PROPORTIONAL_STOP or t.bpp <= 0 or t.bpp in seen:
            return
        if step >= 1 and within_band(t.bpp, target):
            return  # rates move in steps (codestream truncation points): in band after one correction is enough
        seen.add(t.bpp)
        nxt = min(max(k * target / t.bpp, knob.lo), knob.hi)
        if nxt == k:
            return
        k = nxt


def match_rate(cache: TrialCache, knob: Knob, target: float, tol: float = TOLERANCE) -> Match:
    """Search `knob` for `target` bpp using (and filling) `cache`; return the chosen setting."""
    calls_before = cache.calls
    if knob.proportional:
        _rescale(cache, knob, target)
    else:
        _bisect(cache, knob, target)
    best = choose(list(cache.trials.values()), target, knob.increasing, tol)
    return Match(best.knob, best.data, best.bpp, within_band(best.bpp, target, tol), best.enc_s,
                 cache.calls - calls_before)
