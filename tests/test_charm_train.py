"""The v3 (channel-wise autoregressive) training graph: starts as its base, is causal, and trains."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from models import jax_transforms as J  # noqa: E402
from training import charm as C  # noqa: E402
from training import model as TM  # noqa: E402

N, M, SLICES, HIDDEN = 8, 16, 4, 8


def _base(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    p = {k: np.asarray(v) for k, v in J.init(jax.random.PRNGKey(seed), N, M).items()}
    for k, v in p.items():
        if k.endswith("bias") or k.startswith("z_prior/"):
            p[k] = (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
    return p


def _x(seed: int = 0, b: int = 2, h: int = 64, w: int = 64):
    return jnp.asarray(np.random.default_rng(seed).random((b, h, w, 3), np.float32))


def test_layout_and_spec_round_trip():
    p = C.with_slices(_base(), jax.random.PRNGKey(1), SLICES, HIDDEN, lrp=True)
    spec = C.spec_of(p)
    assert spec == {"num_slices": SLICES, "slice_depth": M // SLICES, "hidden": HIDDEN, "lrp": True,
                    "max_support": -1}
    s = M // SLICES
    for i in range(SLICES):   # slice i sees its hyper mu/sigma and the i slices before it
        assert p[f"charm/slice_{i}/cc/conv_0/kernel"].shape == (3, 3, 2 * s + i * s, HIDDEN)
        assert p[f"charm/slice_{i}/lrp/conv_0/kernel"].shape == (3, 3, 3 * s + i * s, HIDDEN)
    assert C.spec_of(_base())["num_slices"] == 0
    with pytest.raises(ValueError, match="equal slices"):
        C.layout(M, 3, HIDDEN)


@pytest.mark.slow
def test_starts_exactly_as_its_base():
    """Zero last layers: a v3 model made from a base has the base's rates and reconstruction (no step wasted)."""
    base = _base()
    v3 = C.with_slices(base, jax.random.PRNGKey(1), SLICES, HIDDEN, lrp=True)
    x = _x()
    want = TM.forward(base, x)
    got = C.forward(v3, x)
    for k in ("bpp", "bpp_y", "bpp_z", "mse"):
        np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=1e-5)
    # The v2 path of charm.forward (no slice params) is training.model.forward too.
    v2 = C.forward(base, x)
    np.testing.assert_allclose(float(v2["bpp"]), float(want["bpp"]), rtol=1e-5)
    # Training mode, same key: same loss terms.
    k = jax.random.PRNGKey(5)
    a, b = TM.forward(base, x, k, "ste"), C.forward(v3, x, k, "ste")
    np.testing.assert_allclose(float(a["bpp"]), float(b["bpp"]), rtol=1e-5)


def test_slice_networks_change_the_rate_once_nonzero():
    """Control for the test above: the slice nets are wired in (a perturbed last layer moves the rate)."""
    base = _base()
    v3 = C.with_slices(base, jax.random.PRNGKey(1), SLICES, HIDDEN)
    v3["charm/slice_2/cc/conv_2/bias"] = np.full_like(v3["charm/slice_2/cc/conv_2/bias"], 0.7)
    x = _x()
    assert abs(float(C.forward(v3, x)["bpp_y"]) - float(C.forward(base, x)["bpp_y"])) > 1e-4


def test_slices_are_causal():
    """Slice i's mu/sigma depend only on slices < i: perturbing y's slice 2 leaves slices 0-2's params unchanged."""
    p = C.with_slices(_base(), jax.random.PRNGKey(1), SLICES, HIDDEN)
    rng = np.random.default_rng(3)
    for k in list(p):
        if "/conv_2/" in k:   # make the nets non-trivial
            p[k] = (0.1 * rng.standard_normal(p[k].shape)).astype(np.float32)
    spec = C.spec_of(p)
    s = M // SLICES
    mu_h = jnp.asarray(rng.standard_normal((1, 4, 4, M)), jnp.float32)
    ls_h = jnp.asarray(rng.standard_normal((1, 4, 4, M)), jnp.float32)
    y = rng.standard_normal((1, 4, 4, M)).astype(np.float32)
    y2 = y.copy()
    y2[..., 2 * s:3 * s] += 5.0

    def params_of(yv):
        dec, out = [], []
        for i in range(SLICES):
            sl = slice(i * s, (i + 1) * s)
            mu, ls = C.slice_params(p, i, mu_h[..., sl], ls_h[..., sl], dec, spec)
            out.append((np.asarray(mu), np.asarray(ls)))
            dec.append(jnp.asarray(yv[..., sl]))
        return out
    a, b = params_of(y), params_of(y2)
    for i in range(3):
        assert np.array_equal(a[i][0], b[i][0]) and np.array_equal(a[i][1], b[i][1])
    assert not np.array_equal(a[3][0], b[3][0])


def test_delta_evaluation_moves_along_the_curve():
    """A larger quantiser step lowers the estimated rate (the codec's knob); delta 1 is the default."""
    p = C.with_slices(_base(), jax.random.PRNGKey(1), SLICES, HIDDEN)
    x = _x()
    rates = [float(C.forward(p, x, delta=d)["bpp_y"]) for d in (0.25, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[2] == pytest.approx(float(C.forward(p, x)["bpp_y"]), rel=1e-6)


@pytest.mark.slow
def test_trains_a_few_steps_and_the_loss_falls():
    """Tiny width on CPU: 30 Adam steps on a fixed batch; the v3 loss falls and the slice nets move."""
    import optax
    p0 = C.with_slices(_base(), jax.random.PRNGKey(1), SLICES, HIDDEN, lrp=True)
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    x = _x(7, b=4, h=64, w=64)
    loss = TM.Loss("lambda", 0.01)
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, i):
        def f(q):
            return loss(C.forward(q, x, jax.random.fold_in(jax.random.PRNGKey(0), i)), x, 1.0, 1.0)
        v, g = jax.value_and_grad(f)(params)
        up, state = opt.update(g, state, params)
        return optax.apply_updates(params, up), state, v

    losses = []
    for i in range(30):
        params, state, v = step(params, state, i)
        losses.append(float(v))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5])
    moved = float(jnp.abs(params["charm/slice_3/cc/conv_2/kernel"]).max())
    assert moved > 0   # the zero-initialised last layer received gradient


def test_the_v3_experiment_reports_the_evaluation_bd_rate():
    """One BD-rate for the project: the experiment's is evaluation.bd's (pchip), not a fit of its own."""
    from training import v3_experiment as X
    r = np.array([0.2, 0.4, 0.8, 1.6])
    d = np.array([27.0, 30.0, 33.0, 36.0])
    assert abs(X.bd_rate(r, d, r, d)) < 1e-9
    assert X.bd_rate(r, d, 0.9 * r, d) == pytest.approx(-10.0, abs=1e-6)
    with pytest.raises(ValueError, match="overlap"):
        X.bd_rate(r, d, r, d + 20)


def test_slice_networks_cost_little():
    """kMAC/pixel of the default v3 slice networks (M=192, 8 x 24, hidden 64): a few percent of g_s."""
    k = C.kmac_per_pixel(192, 8, 64)
    assert 1.0 < k < 10.0


@pytest.mark.slow
def test_trainer_runs_charm_and_exports_a_v3_model(tmp_path):
    """`model: charm` through training.train: the loss falls, the slice nets train, the export is a v3 model."""
    from PIL import Image

    from evaluation.datasets import TRAIN
    from models import weights as W
    from tests.conftest import run_cli
    from tests.test_train import _args, _losses
    data = tmp_path / "data"
    data.mkdir()
    for f in sorted(TRAIN.glob("bsd_*.jpg"))[:8]:
        Image.open(f).convert("RGB").resize((128, 96)).save(data / (f.stem + ".png"))
    r = run_cli(_args(data, tmp_path, 30, ["--config", "training/configs/charm_tiny.yaml"], name="c",
                      latent_channels=8, charm_slices=2))
    assert r.returncode == 0, r.stderr[-2000:]
    losses = _losses(tmp_path / "runs" / "t" / "train.log")
    assert len(losses) == 6 and np.mean(losses[-2:]) < 0.8 * losses[0], losses
    dec = tmp_path / "export" / "c.dec.npz"
    assert W.bitstream_version(dec) == 3
    net = W.load_slice_nets(dec)
    assert net.num_slices == 2 and net.slice_depth == 4 and net.lrp is not None
    assert any(np.abs(l.weight).max() > 0 for l in [net.cc[1].layers[-1]])     # trained away from zero
    assert not (tmp_path / "state" / "c.npz").exists()      # v2-layout committed state is not written for charm
