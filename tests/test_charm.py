"""Bitstream v3's slice model is integer: same integers on every backend, and the slice loop round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from models import charm, intnet
from models import scale_table as S
from models.coding import CorruptStream

jax = pytest.importorskip("jax")
from training import charm as TC  # noqa: E402

M, SLICES, HIDDEN = 16, 4, 8
D = M // SLICES


def _float_params(seed: int = 0, lrp: bool = True, scale: float = 0.3) -> dict:
    """Slice-network parameters with every layer non-trivial (init zeroes the last layer and biases)."""
    p = {k: np.asarray(v) for k, v in TC.init(jax.random.PRNGKey(seed), M, SLICES, HIDDEN, lrp).items()}
    rng = np.random.default_rng(seed)
    for k, v in p.items():
        if k.endswith("/bias") or "/conv_2/" in k:
            p[k] = (scale * rng.standard_normal(v.shape)).astype(np.float32)
    p["analysis/conv_3/kernel"] = np.zeros((5, 5, 8, M), np.float32)      # spec_of reads M from here
    return p


def _hyper(seed: int = 1, shape=(6, 7)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = np.round(rng.normal(0, 3, shape + (M,)) * 256).astype(np.int32)
    ls = np.clip(np.round(rng.normal(0.5, 1.5, shape + (M,)) * 256), S.LOG2_MIN_Q, S.LOG2_MAX_Q).astype(np.int32)
    mu[0, 0, :3] = [intnet.ACT_MAX, -intnet.ACT_MAX, 3 * intnet.ACT_MAX]     # extremes are clamped, not wrapped
    return mu, ls


def _symbols_of(seed: int = 2):
    rng = np.random.default_rng(seed)

    def f(i, idx, mu_q):
        s = np.round(rng.normal(0, 2, idx.shape)).astype(np.int32)
        s.flat[0] = 40000 if i == 1 else s.flat[0]      # beyond SYMBOL_MAX: clamped when dequantised
        return s
    return f


def test_delta_table_is_the_quantiser_step():
    """The literal Q16 table is round(2^(r/32) * 2^16); Q20 delta is within 2^-17 relative of S.delta."""
    assert charm._DELTA_Q16 == tuple(int(np.round(2 ** (r / 32) * 65536)) for r in range(32))
    for code in range(256):
        assert abs(charm.delta_q20(code) / 2 ** 20 - S.delta(code)) <= 2 ** -17 * S.delta(code)
    assert charm.delta_q20(128) == 1 << 20
    assert all(charm.delta_q20(c) < charm.delta_q20(c + 1) for c in range(255))
    with pytest.raises(ValueError):
        charm.delta_q20(256)


def test_y_hat_is_fixed_point_mu_plus_s_delta():
    mu = np.array([0, 256, -1000, 5])
    s = np.array([3, -2, 1, 70000])
    got = charm.y_hat_q(s, mu, 160)                     # delta = 2
    assert got.tolist() == [3 * 512, 256 - 1024, -1000 + 512, intnet.ACT_MAX]     # 2^15 * 512 clamps to 2^22
    assert charm.y_hat_q(np.array([-7]), np.array([0]), 96).tolist() == [-7 * 128]   # delta = 1/2


def test_three_backends_identical():
    """BLAS float64, numpy int64 and TF float64 give the same integers, through the whole slice loop with LRP."""
    net = TC.to_int(_float_params())
    mu_h, ls_h = _hyper()
    res = {b: net.loop(mu_h, ls_h, 140, _symbols_of(), backend=b) for b in ("blas", "int64", "tf64")}
    for b in ("int64", "tf64"):
        for f in ("mu_q", "scale_idx", "symbols", "y_hat_q"):
            assert np.array_equal(getattr(res["blas"], f), getattr(res[b], f)), (b, f)
    r = res["blas"]
    # Non-trivial: the nets move mu and the indexes vary across the slices.
    assert len(np.unique(r.scale_idx)) > 10
    assert not np.array_equal(r.mu_q, mu_h)


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_im2col_conv_equals_the_per_tap_conv(rows):
    """The BLAS backend's banded im2col convolution gives intnet's per-tap integers exactly (band seams included)."""
    rng = np.random.default_rng(rows)
    x = rng.integers(-intnet.ACT_MAX, intnet.ACT_MAX, (37, 5, 6)).astype(np.float64)
    w = rng.integers(-intnet.W_MAX, intnet.W_MAX, (3, 3, 6, 4))
    want = intnet._conv_same(x.astype(np.int64), w, np.int64)
    assert np.array_equal(charm.conv_same(x, w, np.float64, rows=rows).astype(np.int64), want)


def test_single_net_backends_identical_at_the_bounds():
    """Inputs at +-ACT_MAX and beyond (a hostile stream's worth) still agree and stay clamped."""
    net = TC.to_int(_float_params(3)).cc[3]
    rng = np.random.default_rng(4)
    x = rng.integers(-intnet.ACT_MAX, intnet.ACT_MAX, (5, 4, net.in_channels))
    x[0, 0] = 10 * intnet.ACT_MAX
    x[1, 1] = -10 * intnet.ACT_MAX
    outs = [net.run(x, b) for b in ("blas", "int64", "tf64")]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert np.abs(outs[0]).max() <= intnet.ACT_MAX


def test_quantised_slice_nets_track_the_float_nets():
    """The integer slice params are the JAX float ones to Q8 precision (export quantisation is benign)."""
    import jax.numpy as jnp
    p = _float_params(5, lrp=False, scale=0.1)
    net = TC.to_int(p)
    spec = TC.spec_of(p)
    mu_h, ls_h = _hyper(6)
    mu_h[0, 0, :3] = 0
    decoded_q, decoded_f = [], []
    rng = np.random.default_rng(7)
    for i in range(SLICES):
        sl = slice(i * D, (i + 1) * D)
        mu_q, ls_q = net.slice_params(i, mu_h, ls_h, decoded_q)
        mu_f, ls_f = TC.slice_params(p, i, jnp.asarray(mu_h[None, ..., sl] / 256.0, jnp.float32),
                                     jnp.asarray(ls_h[None, ..., sl] / 256.0, jnp.float32),
                                     [jnp.asarray(d[None] / 256.0, jnp.float32) for d in decoded_q], spec)
        np.testing.assert_allclose(mu_q / 256, np.asarray(mu_f)[0], atol=0.03)
        np.testing.assert_allclose(ls_q / 256, np.asarray(ls_f)[0], atol=0.03)
        sym = np.round(rng.normal(0, 2, mu_q.shape)).astype(np.int32)
        decoded_q.append(charm.y_hat_q(sym, mu_q, 128))
        decoded_f.append(None)


def test_storage_round_trip_and_overflow_refusal():
    net = TC.to_int(_float_params())
    meta, arrays = net.to_arrays()
    again = charm.IntCharm.from_arrays(meta, arrays)
    mu_h, ls_h = _hyper(8)
    a, b = net.loop(mu_h, ls_h, 128, _symbols_of(1)), again.loop(mu_h, ls_h, 128, _symbols_of(1))
    assert np.array_equal(a.y_hat_q, b.y_hat_q) and np.array_equal(a.scale_idx, b.scale_idx)
    with pytest.raises(ValueError, match="wrong width"):
        charm.IntCharm.from_arrays(dict(meta, max_support=1), arrays)
    arrays = dict(arrays)
    arrays["cc2_1_b"] = np.full_like(arrays["cc2_1_b"], 1 << 60)
    with pytest.raises(ValueError, match="overflow"):
        charm.IntCharm.from_arrays(meta, arrays)


def test_later_slices_depend_on_earlier_ones():
    """Control for the loop: changing slice 0's symbols changes slice 1's indexes (the context is wired in)."""
    net = TC.to_int(_float_params())
    mu_h, ls_h = _hyper(9)
    zero = net.loop(mu_h, ls_h, 128, lambda i, idx, mu: np.zeros(idx.shape, np.int32))
    bumped = net.loop(mu_h, ls_h, 128, lambda i, idx, mu: np.full(idx.shape, 3 if i == 0 else 0, np.int32))
    assert np.array_equal(zero.scale_idx[..., :D], bumped.scale_idx[..., :D])
    assert not np.array_equal(zero.scale_idx[..., D:2 * D], bumped.scale_idx[..., D:2 * D])


@pytest.fixture(scope="module")
def y_table():
    from models import entropy
    return entropy.y_table()


def test_encode_decode_slices_round_trip(y_table):
    """Encoder (quantise + clamp per slice) and decoder (range-decode per slice) run one loop; all agree."""
    net = TC.to_int(_float_params(lrp=False, scale=0.002))
    mu_h, ls_h = _hyper(10)
    mu_h[0, 0, :3] = 0
    ls_h = np.full_like(ls_h, 640)                        # sigma ~ 5.7, so y below rarely escapes
    rng = np.random.default_rng(11)
    y = rng.normal(0, 4, mu_h.shape).astype(np.float32)
    y[2, 3, 5] = 5000.0                                   # an escape
    code = 120
    sent, data = charm.code_slices(net, y, y_table, mu_h, ls_h, code)
    got = charm.parse_slices(net, data, y_table, mu_h, ls_h, code)
    again = charm.quantise_slices(net, y, y_table, mu_h, ls_h, code)      # no coder: the same symbols
    assert np.array_equal(again.symbols, sent.symbols)
    try:                                                                   # truncated: refused or different
        bad = charm.parse_slices(net, data[:len(data) // 2], y_table, mu_h, ls_h, code)
        assert not np.array_equal(bad.symbols, sent.symbols)
    except CorruptStream:
        pass
    for f in ("mu_q", "scale_idx", "symbols", "y_hat_q"):
        assert np.array_equal(getattr(sent, f), getattr(got, f)), f
    assert sent.symbols.max() > 500                        # the escape went through
    assert np.abs(sent.y_hat() - y).mean() < 0.3 * S.delta(code)      # uniform error: delta/4


def test_hostile_slice_streams_are_bounded(y_table):
    """Random bytes: every slice is bounded (escape budget, finish check); decoding fails cleanly or succeeds."""
    net = TC.to_int(_float_params())
    mu_h, ls_h = _hyper(12, (3, 4))
    rng = np.random.default_rng(13)
    outcomes = set()
    for _ in range(20):
        data = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        dec = charm.SliceDecoder(data, y_table)
        try:
            net.loop(mu_h, ls_h, 128, lambda i, idx, mu_q, d=dec: d.take(idx))
            dec.finish()
            outcomes.add("ok")
        except CorruptStream:
            outcomes.add("corrupt")
    assert "corrupt" in outcomes
    dec = charm.SliceDecoder(b"\x00" * 8, y_table)
    with pytest.raises(CorruptStream, match="out of range"):
        dec.take(np.array([[S.NUM_SCALES]]))


def test_escape_budget_is_per_slice(y_table):
    """A slice carrying more escapes than floor(n/32)+16 is refused by the encoder and by the decoder."""
    enc = charm.SliceEncoder(y_table)
    idx = np.zeros((1, 64), np.int32)
    many = np.full((1, 64), 1000, np.int32)
    with pytest.raises(ValueError, match="clamped"):
        enc.add(many, idx)
    clamped = enc.clamp(many, idx)
    assert int(y_table.escaped(clamped, idx).sum()) == charm.max_escapes(64)
    # Build a stream whose slice carries 64 escapes by coding it as one 64-symbol escape run in a bigger budget:
    big = charm.SliceEncoder(y_table)
    idx2 = np.zeros((1, 2048), np.int32)
    sym2 = np.zeros((1, 2048), np.int32)
    sym2[0, :64] = 1000
    big.add(sym2, idx2)
    data = big.finish()
    dec = charm.SliceDecoder(data, y_table)
    with pytest.raises(CorruptStream, match="escapes"):
        dec.take(idx2[:, :64])          # the decoder reads the same bytes as a 64-symbol slice: over budget


def test_slice_model_cost_is_small():
    """kMAC/pixel of the integer slice nets equals the training graph's count."""
    net = TC.to_int(_float_params())
    assert net.macs_per_pixel() / 1000 == pytest.approx(TC.kmac_per_pixel(M, SLICES, HIDDEN, True))
