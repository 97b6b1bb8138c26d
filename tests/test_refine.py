"""Latent refinement (encoder/refine.py): it never leaves the band, never hands out a stream that decodes
worse, is reproducible, tiles large images, and with the committed models it decodes closer at the same rate."""

from __future__ import annotations

import numpy as np
import pytest

from decoder.api import decode_bytes
from encoder import refine as R
from models import intnet
from models.targets import TOLERANCE
from rate_control.search import DEFAULT_AIM, search
from tests.conftest import kodak_crop


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_tau_falls_to_its_floor():
    taus = [R.tau_at(i, 100) for i in range(100)]
    assert taus[0] == R.TAU_START and all(a >= b for a, b in zip(taus, taus[1:]))
    assert min(taus) >= R.TAU_MIN and R.tau_at(0, 1) == R.TAU_START


@pytest.mark.parametrize("h,w,t", [(32, 48, 64), (130, 70, 64), (8, 12, 4), (1, 1, 4)])
def test_tiles_cover_the_grid_once(h, w, t):
    seen = np.zeros((h, w), int)
    for y0, y1, x0, x1 in R.tiles(h, w, t):
        assert 0 < y1 - y0 <= t and 0 < x1 - x0 <= t
        seen[y0:y1, x0:x1] += 1
    assert (seen == 1).all()


def test_refine_zero_is_the_plain_search(encoder):
    rgb = kodak_crop()
    plain = search(rgb, 0.12, encoder.models)
    off = search(rgb, 0.12, encoder.models, refine=0)
    assert off.data == plain.data and off.refinement is None and plain.refinement is None


def _check_guarantees(c, plain, rgb, target, registry):
    r = c.refinement
    assert r is not None and r.iters > 0 and r.lam > 0
    assert abs(c.bpp / target - 1) <= TOLERANCE and c.within_band
    assert c.bpp <= max(target * (1 + DEFAULT_AIM), plain.bpp) + 1e-12
    decoded = decode_bytes(c.data, registry=str(registry))
    assert _mse(decoded, rgb) == pytest.approx(c.mse, rel=1e-12)        # what the decoder outputs was scored
    assert r.mse_before == pytest.approx(_mse(decode_bytes(plain.data, registry=str(registry)), rgb), rel=1e-12)
    if r.kept:
        assert r.mse_after < r.mse_before and r.gain_db > 0
    else:
        assert c.data == plain.data and r.gain_db == 0


@pytest.mark.parametrize("target", [0.12, 0.25])
def test_refined_stream_stays_in_band_and_never_decodes_worse(encoder, tiny_registry, target):
    rgb = kodak_crop()
    plain = search(rgb, target, encoder.models)
    c = search(rgb, target, encoder.models, refine=20)
    assert (c.target_index, c.delta_code) == (plain.target_index, plain.delta_code)
    _check_guarantees(c, plain, rgb, target, tiny_registry)


def test_refinement_dtype_follows_the_cpu(monkeypatch):
    """bf16 only where the CPU computes it natively and oneDNN runs; an explicit dtype is kept."""
    from models import cpu
    for native, onednn, want in [(True, True, "bfloat16"), (True, False, None), (False, True, None)]:
        monkeypatch.setattr(cpu, "native_bf16", lambda n=native: n)
        monkeypatch.setattr(cpu, "onednn_on", lambda o=onednn: o)
        assert R.resolve_dtype("auto") == want
    assert R.resolve_dtype("float32") is None and R.resolve_dtype(None) is None
    assert R.resolve_dtype("bfloat16") == "bfloat16"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_refinement_in_either_dtype_keeps_the_guarantees(tiny_registry, dtype):
    from encoder.api import Encoder
    enc = Encoder(str(tiny_registry), refine=20, refine_dtype=dtype)
    rgb = kodak_crop()
    plain = search(rgb, 0.25, enc.models)
    _check_guarantees(enc.encode(rgb, 0.25), plain, rgb, 0.25, tiny_registry)


def test_refinement_is_reproducible(encoder):
    rgb = kodak_crop()
    assert search(rgb, 0.12, encoder.models, refine=10).data == search(rgb, 0.12, encoder.models, refine=10).data


@pytest.mark.slow
def test_tiled_refinement(encoder, tiny_registry, monkeypatch):
    """With 4-latent tiles a 128x192 crop is 6 tiles, each refined with its neighbours as fixed context."""
    monkeypatch.setattr(R, "TILE_LATENTS", 4)
    seen = []
    real = R.refine_latents

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(out)
        return out
    monkeypatch.setattr("encoder.encode.refine_latents", spy)
    rgb = kodak_crop()
    plain = search(rgb, 0.12, encoder.models)
    c = search(rgb, 0.12, encoder.models, refine=20)
    assert [s.tiles for s in seen] == [6]
    _check_guarantees(c, plain, rgb, 0.12, tiny_registry)


def test_a_refinement_that_does_not_help_is_dropped(encoder, tiny_registry, monkeypatch):
    """If refinement returned worse latents, the search hands out the unrefined stream (this test fails
    if the acceptance check is removed)."""
    def worse(synthesis, hyper, z_table, rgb, y, z, *a, **k):
        return R.Refined(y + np.float32(3.0), np.round(z), 1, 1.0, 1, 1, 0.0)
    monkeypatch.setattr("encoder.encode.refine_latents", worse)
    rgb = kodak_crop()
    plain = search(rgb, 0.12, encoder.models)
    c = search(rgb, 0.12, encoder.models, refine=5)
    assert not c.refinement.kept and c.data == plain.data
    _check_guarantees(c, plain, rgb, 0.12, tiny_registry)


@pytest.mark.slow
def test_committed_models_decode_closer_at_the_same_rate():
    """The point of it, on the shipped models: a Kodak crop at 0.5 bpp gains PSNR, the rate stays in the band."""
    from encoder.api import Encoder
    rgb = kodak_crop("kodim23.png", 256, 384)
    enc = Encoder()
    plain = enc.encode(rgb, 0.5)
    enc.refine = 40
    c = enc.encode(rgb, 0.5)
    _check_guarantees(c, plain, rgb, 0.5, enc.models.registry.path)
    assert c.refinement.kept and c.refinement.gain_db > 0.1, c.refinement


def test_float_surrogate_follows_the_integer_hyper_synthesis():
    """z's gradient comes from the float surrogate; it must compute what the integer network computes
    (to a small fraction of a quantiser step), or refining z would aim at the wrong mu and sigma."""
    from encoder.api import Encoder
    from models.runtime import import_tensorflow
    tf = import_tensorflow()
    enc = Encoder()
    entry = enc.models.distinct_entries()[2]
    model = enc.models.encoder_model(entry)
    z_hat = np.round(model.hyper_analyse(model.transform(kodak_crop("kodim07.png", 256, 256))))
    mu_q, log2_sigma_q = model.dec.intnet.run(z_hat)
    mu, log2_sigma = intnet.FloatHyperSynthesis(tf, model.dec.intnet)(tf.constant(z_hat[None], tf.float32))
    assert np.abs(mu[0].numpy() - mu_q / 256).max() < 0.05
    assert np.abs(log2_sigma[0].numpy() - log2_sigma_q / 256).max() < 0.05


def test_z_bits_are_the_tables_own():
    """z's rate in the loss is the CDF table's: -log2 of each bin's mass, escapes priced above the row."""
    from encoder.api import Encoder
    from models.runtime import import_tensorflow
    tf = import_tensorflow()
    enc = Encoder()
    table = enc.models.decoder_model(enc.models.distinct_entries()[0]).z_table
    c = 3
    head = int(np.sum(table.length[:c] + 2))
    n, lo = int(table.length[c]), int(table.offset[c])
    mass = np.diff(table.cdf[head + 1:head + 2 + n].astype(np.float64)) / 2.0 ** table.cdf[head]
    zb = R._ZBits(tf, table, c + 1)
    v = np.zeros((1, c + 1), np.float32)
    for k in (0, n // 2, n - 2):
        v[0, c] = lo + k
        assert float(zb(tf.constant(v))[0, c]) == pytest.approx(-np.log2(mass[k]), rel=1e-5)
    v[0, c] = lo + n + 5
    assert float(zb(tf.constant(v))[0, c]) > -np.log2(mass[n - 1])
