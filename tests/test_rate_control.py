"""Rate search logic on synthetic rate curves (no models needed), then on real tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from models import scale_table as S
from rate_control.search import Unreachable, bracket, fit_delta, search
from tests.conftest import kodak_crop


@pytest.mark.parametrize("target,expected", [(0.05, [0]), (0.3, [1, 2]), (0.25, [0, 1]), (0.8, [2, 3]), (5.0, [4, 5])])
def test_bracket(target, expected):
    natural = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0]
    calls = []

    def rate(k):
        calls.append(k)
        return natural[k]
    assert bracket(rate, target, len(natural)) == expected
    assert len(calls) <= 3          # binary, not linear: ceil(log2(6))


@pytest.mark.parametrize("target", [0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.8, 1.0, 2.5, 5.0])
@pytest.mark.parametrize("start", range(6))
def test_bracket_from_start_agrees_with_binary(target, start):
    natural = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0]
    assert bracket(natural.__getitem__, target, 6, start) == bracket(natural.__getitem__, target, 6)


@pytest.mark.parametrize("own,target", [(1, 0.22), (1, 0.27), (3, 0.9), (3, 1.1), (0, 0.05), (5, 4.0)])
def test_bracket_from_own_model_costs_two_probes(own, target):
    """A per-target model's natural rate is near its target: starting there needs two probes, not log2(n)+1."""
    natural = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0]
    calls = set()

    def rate(k):
        calls.add(k)
        return natural[k]
    bracket(rate, target, 6, own)
    assert len(calls) <= 2, calls


def _curve(rate_at_unity):
    # Rate falls ~ 1 bit per symbol-octave: a smooth monotone stand-in for real coding.
    return lambda code: rate_at_unity * 2.0 ** (-(code - S.DELTA_CODE_UNITY) / S.DELTA_CODE_PER_OCTAVE * 0.8)


@pytest.mark.parametrize("target", [0.06, 0.25, 0.5, 1.0])
def test_fit_delta_lands_within_aim(target):
    f = _curve(0.5)
    code = fit_delta(f, target, 0.02)
    assert f(code) <= target * 1.02 + 1e-12 or abs(f(code) / target - 1) <= 0.15
    assert abs(f(code) / target - 1) < 0.03
    # and it is the finest step that does so (best quality)
    assert code == S.DELTA_CODE_MIN or f(code - 1) > target * 1.02 or abs(f(code - 1) - target) < abs(f(code) - target)


def test_fit_delta_saturates():
    f = _curve(0.5)
    assert fit_delta(f, 1000.0, 0.02) == S.DELTA_CODE_MIN
    assert fit_delta(f, 1e-6, 0.02) == S.DELTA_CODE_MAX


def test_search_lands_in_band_and_is_deterministic(encoder):
    rgb = kodak_crop()
    a = search(rgb, 0.12, encoder.models)
    b = search(rgb, 0.12, encoder.models)
    assert a.data == b.data
    assert a.within_band and abs(a.deviation) <= 0.15
    assert 8 * len(a.data) / (rgb.shape[0] * rgb.shape[1]) == pytest.approx(a.bpp)
    assert a.analyses <= 2          # analysis once per candidate model, not per probe
    assert a.probes > a.analyses


def test_unreachable_reports_range(encoder):
    rgb = kodak_crop(h=8, w=8)
    with pytest.raises(Unreachable) as e:
        search(rgb, 0.06, encoder.models)
    assert e.value.lo > 0.06 and "achievable range" in str(e.value)
    assert not e.value.best.within_band


def test_search_refuses_a_stream_that_parses_differently(encoder, monkeypatch):
    """The parse-back guard can fail: an encoder that codes other symbols than it reconstructs is caught."""
    import models.coding as C
    from rate_control.search import EncoderMismatch
    real = C.encode

    def off_by_one(symbols, indexes, table):
        s = np.array(symbols, np.int64, copy=True)
        s.flat[0] += 1
        return real(s, indexes, table)
    monkeypatch.setattr(C, "encode", off_by_one)
    with pytest.raises(EncoderMismatch, match="does not parse"):
        search(kodak_crop(), 0.12, encoder.models)


class _Refined:
    """Refined latents on a synthetic curve: 43 bytes (0.86 bpp on 20 x 20, -14 %) at code D, two bytes more
    per finer code; MSE 9 at D and `refit_mse` elsewhere (latents refined for D, re-quantised)."""

    def __init__(self, rgb, d, refit_mse):
        self.rgb, self.d, self.refit_mse = rgb, d, refit_mse

    def code(self, delta_code, target_index):
        return b"x" * max(1, 43 + 2 * (self.d - delta_code))

    def reconstruct(self, delta_code):
        return self.rgb + np.sqrt(9.0 if delta_code == self.d else self.refit_mse)


class _Unrefined:
    def __init__(self, refined):
        self.r = refined

    def refined(self, rgb, delta_code, bit_budget, iters, here=None):
        from types import SimpleNamespace
        return self.r, SimpleNamespace(lam=2.0)


@pytest.mark.parametrize("refit_mse,floor,expect_refit", [(9.5, 0.12, False), (8.0, 0.12, True), (8.0, 0.15, False)])
def test_a_refit_above_the_band_edge_is_an_option_not_a_rule(refit_mse, floor, expect_refit):
    """A refined stream at -14 % is in the band: under a 12 % floor it is also re-fitted (to 1.02 bpp), and
    the cheaper of the two in MSE + lambda * bpp is handed out; under the band's own floor it is kept as is."""
    from types import SimpleNamespace

    from rate_control.search import Choice, _Probe
    d = S.DELTA_CODE_UNITY
    rgb = np.full((20, 20, 3), 100.0)
    p = _Probe(rgb, None, [SimpleNamespace(target_index=3)])
    p.analysed[0] = _Unrefined(_Refined(rgb, d, refit_mse))
    c = Choice(b"", 1.0, 1.0, "m", 3, d, True, mse=10.0)
    got = p.refine(c, 10, 1.02, 0.02, floor)
    assert got.refinement.kept and got.within_band
    assert (got.delta_code, got.bpp) == ((d - 4, 1.02) if expect_refit else (d, 0.86))
