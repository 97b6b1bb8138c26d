"""Rate selection: binary search over the ordered models, then bisection on the delta code.

Rates are always real coded bytes of the whole file (header and CRC included),
bpp = 8 * bytes / (W * H), so what the search sees is what the challenge measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from models import scale_table as S
from models.targets import TOLERANCE

DEFAULT_AIM = 0.02
# A refined stream whose rate falls below target * (1 - floor) is re-fitted to the finest delta code under the
# ceiling, spending the bits refinement saved on quality (evaluation/bench/band_edge.py measures the floor).
DEFAULT_FLOOR = TOLERANCE


# What rate control needs from the encoder side, typed (encoder/encode.py implements it): the search never
# imports the encoder, and the encoder's models are handed in. A model is named by its slot, the registry
# entry's `target_index`, which is also what the stream header carries.
class Analysed(Protocol):
    """One image analysed by one model: quantise and code at any delta code without re-running g_a."""

    mu_q: np.ndarray

    def code(self, delta_code: int, target_index: int) -> bytes: ...

    def symbols(self, delta_code: int) -> tuple[np.ndarray, np.ndarray]: ...

    def reconstruct(self, delta_code: int) -> np.ndarray: ...

    def refined(self, rgb: np.ndarray, delta_code: int, bit_budget: float, iters: int,
                here: tuple[float, float] | None = None) -> tuple[Any, Any] | None:
        """(the same analysis with y refined at this delta code, a report with `lam`), or None where
        refinement does not apply (encoder/refine.py); `here` is (bpp, MSE) at that code, when known."""
        ...


class Analyser(Protocol):
    def analyse(self, rgb: np.ndarray) -> Analysed: ...


class Models(Protocol):
    """The candidate models in rate order, each able to analyse; also the decoder's model cache, which
    the parse-back guard (`_Probe.verify`) hands to decoder.decode.parse."""

    def distinct_entries(self) -> list: ...

    def encoder_model(self, entry) -> Analyser: ...


@dataclass
class Choice:
    data: bytes
    bpp: float
    target: float
    model: str
    target_index: int
    delta_code: int
    within_band: bool
    probes: int = 0
    analyses: int = 0
    mse: float | None = None
    refinement: Refinement | None = None

    @property
    def delta(self) -> float:
        return S.delta(self.delta_code)

    @property
    def deviation(self) -> float:
        return self.bpp / self.target - 1.0


@dataclass
class Refinement:
    """What latent refinement did to a choice: kept only if it costs less (MSE + lam * bpp) at a rate still
    in the band."""

    iters: int
    lam: float             # the image's own slope, MSE per bpp
    mse_before: float
    mse_after: float
    bpp_before: float
    kept: bool
    bpp_after: float = float("nan")

    @property
    def gain_db(self) -> float:
        """PSNR gain of the stream handed out (0 when the refinement was not kept)."""
        return 10 * float(np.log10(self.mse_before / self.mse_after)) if self.kept else 0.0

    @property
    def equivalent_db(self) -> float:
        """The gain counting the rate too: the bits saved valued at the image's slope (0 when not kept)."""
        if not self.kept:
            return 0.0
        return 10 * float(np.log10(self.mse_before / (self.mse_after - self.lam * (self.bpp_before - self.bpp_after))))


class EncoderMismatch(RuntimeError):
    """The decoder would parse a stream differently from what the encoder intended."""


class Unreachable(Exception):
    """No (model, delta) lands in the band; carries the achievable range and the closest stream."""

    def __init__(self, target: float, lo: float, hi: float, best: Choice):
        super().__init__(f"target {target:.4f} bpp is unreachable for this image: achievable range is "
                         f"{lo:.4f}-{hi:.4f} bpp (closest: {best.bpp:.4f} bpp)")
        self.lo, self.hi, self.best = lo, hi, best


@dataclass
class _Probe:
    """Caches analyses and coded streams for one image across the whole search."""

    rgb: np.ndarray
    models: Models
    entries: list
    analysed: dict = field(default_factory=dict)
    coded: dict = field(default_factory=dict)

    def bpp(self, k: int, code: int) -> float:
        return 8 * len(self.stream(k, code)) / (self.rgb.shape[0] * self.rgb.shape[1])

    def stream(self, k: int, code: int) -> bytes:
        if (k, code) not in self.coded:
            if k not in self.analysed:
                self.analysed[k] = self.models.encoder_model(self.entries[k]).analyse(self.rgb)
            self.coded[k, code] = self.analysed[k].code(code, self.entries[k].target_index)
        return self.coded[k, code]

    def verify(self, c: Choice) -> Choice:
        """Parse the chosen stream as the decoder will and require the encoder's own mu and symbols.

        The quality comparison and every rate figure assume that the decoder sees what the encoder
        meant; one range-decoding pass (no synthesis) proves it for each stream we hand out.
        """
        from decoder.decode import parse
        a = self.analysed[self.index(c)]
        got = parse(c.data, self.models)
        if not (np.array_equal(got.mu_q, a.mu_q) and np.array_equal(got.symbols, a.symbols(c.delta_code)[0])):
            raise EncoderMismatch(f"model {c.model} at delta code {c.delta_code}: the stream does not parse "
                                  "to the latents the encoder coded (encoder bug; nothing written)")
        return c

    def mse(self, k: int, code: int) -> float:
        rec = self.analysed[k].reconstruct(code)
        return float(np.mean((rec.astype(np.float64) - self.rgb.astype(np.float64)) ** 2))

    def refine(self, c: Choice, iters: int, ceiling: float, aim: float, floor: float = DEFAULT_FLOOR) -> Choice:
        """The choice with its latents refined at its delta code, if that costs less (MSE + lambda * bpp,
        lambda being the image's own slope) while the rate stays in the band and under the ceiling the
        search aimed at (or the choice's own rate, if above).

        Refining z as well can save more bits than the band allows (up to -14 % at 0.06 bpp): a refined
        stream below target * (1 - floor) is also re-fitted, by the same bisection, to the finest delta
        code under the ceiling, which spends the bits saved on quality instead; of the two, the one that
        is in the band and costs less is the refinement's stream. (Re-quantised at another step, latents
        refined for this one can decode worse, so the re-fit is an option, not a rule, above the band.)
        """
        k = self.index(c)
        pixels = self.rgb.shape[0] * self.rgb.shape[1]
        limit = max(ceiling, c.bpp)
        before = c.mse if c.mse is not None else self.mse(k, c.delta_code)
        got = self.analysed[k].refined(self.rgb, c.delta_code, (limit - c.bpp) * pixels, iters, (c.bpp, before))
        if got is None:
            return c
        a, info = got
        lam = float(info.lam)
        unrefined = self.analysed[k]
        self.analysed[k] = a
        streams = {c.delta_code: a.code(c.delta_code, c.target_index)}     # each code range-coded once

        def rate(d: int) -> float:
            if d not in streams:
                streams[d] = a.code(d, c.target_index)
            return 8 * len(streams[d]) / pixels
        codes = [c.delta_code]
        if rate(c.delta_code) < c.target * (1 - floor):
            codes.append(fit_delta(rate, c.target, aim))
        best = None                    # (cost, code, data, bpp, mse) of the cheapest option in the band
        for i, code in enumerate(codes):
            data, bpp = streams[code], rate(code)
            ok = abs(bpp / c.target - 1) <= TOLERANCE + 1e-12 and bpp <= limit
            if ok or (best is None and i == len(codes) - 1):       # the report needs the last one's MSE
                after = self.mse(k, code)
                if ok and (best is None or after + lam * bpp < best[0]):
                    best = (after + lam * bpp, code, data, bpp, after)
        if best is not None:
            _, code, data, bpp, after = best
        kept = best is not None and best[0] < before + lam * c.bpp
        report = Refinement(iters, lam, before, after, c.bpp, kept, bpp)
        if not kept:
            self.analysed[k] = unrefined
            return replace(c, mse=before, refinement=report)
        self.coded[k, code] = data
        return replace(c, data=data, bpp=bpp, delta_code=code, mse=after, refinement=report)

    def index(self, c: Choice) -> int:
        """Position in `entries` of the model that made this choice."""
        return next(i for i, e in enumerate(self.entries) if e.target_index == c.target_index)

    def choice(self, k: int, code: int, target: float) -> Choice:
        b = self.bpp(k, code)
        return Choice(self.stream(k, code), b, target, self.entries[k].name, self.entries[k].target_index, code,
                      abs(b / target - 1) <= TOLERANCE + 1e-12, len(self.coded), len(self.analysed))


def bracket(rates_at_unity, target: float, n: int, start: int | None = None) -> list[int]:
    """Indices of the models whose natural rates (delta = 1) bracket the target.

    Finds the first model whose natural rate reaches the target; that model and
    the one below it are the candidates. Without `start` this is a binary
    search. With `start` (the model trained for this target) it walks from
    there, because a per-target model's natural rate is usually within one
    model of the target: the common case costs the two analyses that the
    candidates need anyway, instead of log2(n) probes spread over the range.
    """
    if start is None:
        lo, hi = 0, n - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if rates_at_unity(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
    else:
        k = min(max(start, 0), n - 1)
        if rates_at_unity(k) >= target:
            while k > 0 and rates_at_unity(k - 1) >= target:
                k -= 1
        else:
            k += 1
            while k < n - 1 and rates_at_unity(k) < target:
                k += 1
            k = min(k, n - 1)
        lo = k
    return [k for k in (lo - 1, lo) if 0 <= k < n]


def own_model(entries, target: float) -> int:
    """Position of the model registered for the challenge target nearest to `target` (in log rate)."""
    from models.targets import TARGETS
    return min(range(len(entries)), key=lambda k: abs(np.log(TARGETS[entries[k].target_index] / target)))


def fit_delta(bpp_at, target: float, aim: float) -> int:
    """Smallest delta code (finest step, best quality) whose rate is at most target*(1+aim).

    Then the neighbour one step finer is taken instead if it is closer to the
    target and still inside the band.
    """
    ceiling = target * (1 + aim)
    lo, hi = S.DELTA_CODE_MIN, S.DELTA_CODE_MAX
    if bpp_at(lo) <= ceiling:
        return lo
    if bpp_at(hi) > ceiling:
        return hi
    while hi - lo > 1:          # invariant: bpp(lo) > ceiling >= bpp(hi)
        mid = (lo + hi) // 2
        if bpp_at(mid) <= ceiling:
            hi = mid
        else:
            lo = mid
    finer = bpp_at(lo)
    if abs(finer / target - 1) <= TOLERANCE and abs(finer - target) < abs(bpp_at(hi) - target):
        return lo
    return hi


def search(rgb: np.ndarray, target: float, models: Models, aim: float = DEFAULT_AIM,
           compare_quality: bool = True, refine: int = 0, floor: float = DEFAULT_FLOOR) -> Choice:
    """Best stream within the band; raises Unreachable when there is none.

    With `refine` > 0 the chosen stream's latents are then refined for that many steps
    (encoder/refine.py) at its model and delta code, and kept only if the stream stays in the band and
    costs less MSE + lambda * bpp; one that lands below target * (1 - floor) is first re-fitted.
    """
    entries = models.distinct_entries()
    if not entries:
        raise ValueError("the model registry is empty")
    p = _Probe(rgb, models, entries)
    candidates = bracket(lambda k: p.bpp(k, S.DELTA_CODE_UNITY), target, len(entries), own_model(entries, target))
    fits = []
    for k in candidates:
        code = fit_delta(lambda c, k=k: p.bpp(k, c), target, aim)
        fits.append(p.choice(k, code, target))
    ok = [c for c in fits if c.within_band]
    if len(ok) > 1 and compare_quality:
        for c in ok:
            c.mse = p.mse(p.index(c), c.delta_code)
        ok.sort(key=lambda c: (c.mse, -c.bpp))
    elif len(ok) > 1:
        ok.sort(key=lambda c: abs(c.deviation))
    for c in fits:
        c.probes, c.analyses = len(p.coded), len(p.analysed)
    if ok and refine > 0:
        ok[0] = p.refine(ok[0], refine, target * (1 + aim), aim, floor)
    if ok:
        return p.verify(ok[0])
    lo, hi = p.bpp(0, S.DELTA_CODE_MAX), p.bpp(len(entries) - 1, S.DELTA_CODE_MIN)
    best = min(fits, key=lambda c: abs(np.log(c.bpp / target)))
    best.probes, best.analyses = len(p.coded), len(p.analysed)
    raise Unreachable(target, lo, hi, p.verify(best))
