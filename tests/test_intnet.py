"""The parse path is bit-exact: proven by independent implementations and runtime configurations."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import intnet
from models import scale_table as S
from models.transforms import HyperSynthesisTransform


@pytest.fixture(scope="module")
def float_hs():
    tf.keras.utils.set_random_seed(3)
    hs = HyperSynthesisTransform(16, 12)
    hs.build((None, None, None, 16))
    # Make biases non-zero so they are exercised.
    for l in hs.layers:
        l.bias.assign(tf.random.normal(l.bias.shape, stddev=0.5))
    return hs


def _z(shape=(5, 7, 16), seed=0, scale=6):
    rng = np.random.default_rng(seed)
    z = np.round(rng.normal(0, scale, shape)).astype(np.int32)
    z[0, 0, :4] = [intnet.Z_MAX, -intnet.Z_MAX, 10 * intnet.Z_MAX, -10 * intnet.Z_MAX]   # clamps
    return z


def test_numpy_convs_match_keras_semantics(float_hs):
    """Our deconv/conv index arithmetic equals tf.keras Conv2DTranspose/Conv2D('same')."""
    x = np.random.default_rng(1).normal(size=(1, 5, 7, 16)).astype(np.float64)
    a = x[0]
    for l in float_hs.layers:
        w = l.kernel.numpy().astype(np.float64)
        if isinstance(l, tf.keras.layers.Conv2DTranspose):
            ours = intnet._deconv_same(a, w.transpose(0, 1, 3, 2), 2, np.float64)
        else:
            ours = intnet._conv_same(a, w, np.float64)
        ours = ours + l.bias.numpy()
        ref = l(tf.constant(a[None], tf.float32)).numpy()[0]
        if l.activation is tf.keras.activations.relu:
            ours = np.maximum(ours, 0)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
        a = ref.astype(np.float64)


def test_quantised_net_tracks_float_net(float_hs):
    net = intnet.from_keras(float_hs)
    z = _z(seed=4, scale=2)
    z[0, 0, :4] = 0
    mu_q, ls_q = net.run(z)
    ref = float_hs(tf.constant(z[None], tf.float32)).numpy()[0]
    m = mu_q.shape[-1]
    np.testing.assert_allclose(mu_q / 256, ref[..., :m], atol=0.05)
    inside = (ref[..., m:] > S.LOG2_SCALE_MIN) & (ref[..., m:] < S.LOG2_SCALE_MAX)
    np.testing.assert_allclose((ls_q / 256)[inside], ref[..., m:][inside], atol=0.05)


def test_three_implementations_identical(float_hs):
    net = intnet.from_keras(float_hs)
    z = _z()
    mu_b, ls_b = net.run(z, "blas")
    mu_i, ls_i = net.run(z, "int64")
    mu_t, ls_t = net.run(z, "tf64")
    assert np.array_equal(mu_b, mu_i) and np.array_equal(ls_b, ls_i)
    assert np.array_equal(mu_b, mu_t) and np.array_equal(ls_b, ls_t)
    # Non-trivial: the outputs actually vary, and extremes were clamped not wrapped.
    assert len(np.unique(ls_b)) > 10 and np.abs(mu_b).max() > 0


def test_storage_round_trip(float_hs):
    net = intnet.from_keras(float_hs)
    meta, arrays = net.to_arrays()
    again = intnet.IntHyperSynthesis.from_arrays(meta, arrays)
    z = _z(seed=9)
    assert all(np.array_equal(a, b) for a, b in zip(net.run(z), again.run(z)))


def test_refuses_overflowing_network(float_hs):
    net = intnet.from_keras(float_hs)
    meta, arrays = net.to_arrays()
    arrays["hs1_b"] = np.full_like(arrays["hs1_b"], 1 << 60)
    with pytest.raises(ValueError, match="overflow"):
        intnet.IntHyperSynthesis.from_arrays(meta, arrays)


def test_scale_index_is_integer_and_monotone():
    ls = np.arange(S.LOG2_MIN_Q - 100, S.LOG2_MAX_Q + 100)
    for code in (0, 100, 128, 200, 255):
        idx = S.scale_index(ls, code)
        assert idx.dtype == np.int32 and idx.min() >= 0 and idx.max() < S.NUM_SCALES
        assert np.all(np.diff(idx) >= 0)
    # delta = 2 (code 160) halves sigma/delta: exactly 8 table steps lower.
    mid = np.array([0])
    assert S.scale_index(mid, 128)[0] - S.scale_index(mid, 160)[0] == 8
    # Nearest entry in log: sigma = 1 (log2 = 0) maps to entry 26 (log2 = -3.25 + 26/8 = 0).
    assert S.scale_index(np.array([0]), 128)[0] == 26


@pytest.mark.parametrize("rows", [1, 2, 5, 16])
def test_banded_run_is_exact(float_hs, rows):
    """Banding z (what bounds decoder memory at 8K) reproduces the unbanded integers exactly."""
    net = intnet.from_keras(float_hs)
    z = _z(shape=(37, 6, 16), seed=7)
    whole = net._run_numpy(np.clip(z.astype(np.int64), -intnet.Z_MAX, intnet.Z_MAX), np.float64)
    banded = net._run_banded(np.clip(z.astype(np.int64), -intnet.Z_MAX, intnet.Z_MAX), np.float64, rows=rows)
    assert np.array_equal(whole.astype(np.int64), banded.astype(np.int64))
    mu_t, ls_t = net.run(z, "tf64")                     # independent, never banded
    mu_b, ls_b = net.run(z, "blas")                     # 37 rows > BAND_ROWS: banded
    assert np.array_equal(mu_t, mu_b) and np.array_equal(ls_t, ls_b)


def test_band_halo_below_reach_shows_seams(float_hs):
    """Control: the net reaches 2 z rows; a halo of 1 is not exact, so the test above can fail."""
    net = intnet.from_keras(float_hs)
    z = np.clip(_z(shape=(37, 6, 16), seed=7).astype(np.int64), -intnet.Z_MAX, intnet.Z_MAX)
    whole = net._run_numpy(z, np.float64)
    assert np.array_equal(whole, net._run_banded(z, np.float64, rows=4, halo=2).astype(np.float64))
    assert not np.array_equal(whole, net._run_banded(z, np.float64, rows=4, halo=1).astype(np.float64))
