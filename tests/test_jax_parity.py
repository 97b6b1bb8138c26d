"""The JAX trainer is pinned to the codec: same weights, same transforms, same integers, same tables.

The Keras layers (models/transforms.py), the integer hyper-synthesis (models/intnet.py) and
tfc's entropy models are the codec; models/jax_transforms.py and training/model.py are what
trains. Each test feeds the same parameters to both and compares.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_compression as tfc

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from models import jax_transforms as J  # noqa: E402
from models import transforms as T  # noqa: E402
from tests.conftest import ROOT, kodak_crop  # noqa: E402

N, M = 16, 24


def _perturbed(seed: int = 0, n: int = N, m: int = M) -> dict:
    """Random parameters with non-trivial GDN, biases and prior (a fresh init has beta = 1, zero biases)."""
    rng = np.random.default_rng(seed)
    p = {k: np.asarray(v) for k, v in J.init(jax.random.PRNGKey(seed), n, m).items()}
    for k, v in p.items():
        if k.endswith(("bias", "reparam_beta", "reparam_gamma")) or k.startswith("z_prior/"):
            p[k] = (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
    return p


def _keras(p: dict) -> dict:
    n, m = J.widths_of(p)
    layers = {"analysis": (T.AnalysisTransform(n, m), 3), "synthesis": (T.SynthesisTransform(n), m),
              "hyper_analysis": (T.HyperAnalysisTransform(n, n), m),
              "hyper_synthesis": (T.HyperSynthesisTransform(n, m), n)}
    for name, (layer, cin) in layers.items():
        layer.build((None, None, None, cin))
        layer.set_weights(J.sub(p, name))
    return {k: v[0] for k, v in layers.items()}


def _inputs(rng, m: int, n: int) -> dict:
    return {"analysis": rng.random((2, 64, 128, 3), np.float32),
            "synthesis": (3 * rng.standard_normal((2, 4, 8, m))).astype(np.float32),
            "hyper_analysis": rng.standard_normal((2, 4, 8, m)).astype(np.float32),
            "hyper_synthesis": rng.standard_normal((2, 2, 3, n)).astype(np.float32)}


def test_layout_matches_the_keras_weights_order():
    """The parameter layout is the Keras layers' own: same shapes, same order, GDN reparametrised as tfc does."""
    p = _perturbed()
    for name, layer in _keras(p).items():
        ours = [(k, v.shape) for k, v in J.ordered(p) if k.startswith(name + "/")]
        theirs = [(w.name, tuple(w.shape)) for w in layer.weights]
        assert [s for _, s in ours] == [s for _, s in theirs], name
        for (k, _), (w, _) in zip(ours, theirs):
            assert w.split("/")[0].replace("igdn", "gdn").split(":")[0] in k.replace("igdn", "gdn"), (k, w)


@pytest.mark.parametrize("name", list(J.TRANSFORMS))
def test_transforms_agree_on_random_inputs(name):
    p = _perturbed()
    x = _inputs(np.random.default_rng(1), M, N)[name]
    want = _keras(p)[name](x).numpy()
    got = np.asarray(J.TRANSFORMS[name](p, jnp.asarray(x)))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * max(1.0, np.abs(want).max()))


def test_trained_base_agrees_on_a_kodak_crop():
    """The committed base (N=128, M=192) through both: analysis, hyper-analysis and synthesis."""
    from training import state
    p, _ = state.load(ROOT / "models" / "checkpoints" / "base.npz")
    k = _keras(p)
    x = (kodak_crop("kodim23.png", 128, 192).astype(np.float32) / 255.0)[None]
    y_k, y_j = k["analysis"](x).numpy(), np.asarray(J.analysis(p, jnp.asarray(x)))
    np.testing.assert_allclose(y_j, y_k, atol=1e-3 * np.abs(y_k).max())
    z_k, z_j = k["hyper_analysis"](y_k).numpy(), np.asarray(J.hyper_analysis(p, jnp.asarray(y_k)))
    np.testing.assert_allclose(z_j, z_k, atol=1e-3 * np.abs(z_k).max())
    y_hat = np.round(y_k)
    x_k, x_j = k["synthesis"](y_hat).numpy(), np.asarray(J.synthesis(p, jnp.asarray(y_hat)))
    assert np.abs(x_k - x_j).max() * 255 < 0.05          # far below one grey level


def test_gdn_gradients_match_tfc():
    """GDN's reparametrisation and tfc.lower_bound's gradient rule, on a GDN whose beta sits on its bound."""
    rng = np.random.default_rng(2)
    layer = tfc.GDN(inverse=False)
    x = rng.standard_normal((2, 5, 5, 6)).astype(np.float32)
    layer.build(x.shape)
    beta = np.full(6, np.sqrt(1e-6 + J.GDN_PEDESTAL) - 1e-4, np.float32)       # below the bound: clamped
    beta[:3] = 1.0 + rng.random(3)
    gamma = np.abs(rng.standard_normal((6, 6))).astype(np.float32) * 0.3
    layer.beta_parameter.variable.assign(beta)
    layer.gamma_parameter.variable.assign(gamma)
    weights = rng.standard_normal(x.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(layer(x) * weights)
    g_tf = tape.gradient(out, [layer.beta_parameter.variable, layer.gamma_parameter.variable])

    def f(b, g):
        return jnp.sum(J.gdn(jnp.asarray(x), b, g) * weights)
    val, g_j = jax.value_and_grad(f, argnums=(0, 1))(jnp.asarray(beta), jnp.asarray(gamma))
    np.testing.assert_allclose(float(val), float(out), rtol=1e-5)
    for a, b in zip(g_j, g_tf):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-4, atol=1e-5)


def test_integer_hyper_synthesis_export_is_identical():
    from models import intnet
    from training.export import hyper_synthesis_layers
    p = _perturbed(3)
    ours = intnet.from_float(hyper_synthesis_layers(p)).to_arrays()
    theirs = intnet.from_keras(_keras(p)["hyper_synthesis"]).to_arrays()
    assert ours[0] == theirs[0]
    assert sorted(ours[1]) == sorted(theirs[1])
    for k in ours[1]:
        np.testing.assert_array_equal(ours[1][k], theirs[1][k])


def _tfc_prior_params(seed: int) -> tuple[object, dict]:
    """A tfc prior initialised by tfc itself, and its variables read into our parameter names."""
    tf.random.set_seed(seed)
    prior = tfc.NoisyDeepFactorized(batch_shape=(N,))
    p = _perturbed()
    for group, attr in (("matrix", "_matrices"), ("bias", "_biases"), ("factor", "_factors")):
        for i, var in enumerate(getattr(prior.base, attr)):
            if group == "factor":        # tfc starts factors at 0; move them so tanh(factor) is exercised
                var.assign(var + tf.random.normal(var.shape, stddev=0.5))
            p[f"z_prior/{group}_{i}"] = var.numpy()
    return prior, p


@pytest.mark.slow
def test_z_tables_identical_to_a_tfc_prior_with_the_same_parameters():
    from models import entropy
    from training.export import tfc_prior
    prior, p = _tfc_prior_params(5)
    a, b = entropy.z_table(prior), entropy.z_table(tfc_prior(p))
    for field in ("cdf", "offset", "length"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_likelihoods_match_tfc():
    """What the trainer minimises is what the codec's tables code: z under the factorized prior, y under N(mu, sigma)."""
    from training.model import y_log_prob, z_log_prob
    prior, p = _tfc_prior_params(6)
    rng = np.random.default_rng(7)
    z = (4 * rng.standard_normal((3, 4, 5, N))).astype(np.float32)
    np.testing.assert_allclose(np.asarray(z_log_prob(p, jnp.asarray(z))), prior.log_prob(z).numpy(),
                               rtol=1e-4, atol=1e-4)
    y = (5 * rng.standard_normal((4, 6, M))).astype(np.float32)
    mu = rng.standard_normal((4, 6, M)).astype(np.float32)
    sigma = np.exp2(rng.uniform(-3, 6, (4, 6, M))).astype(np.float32)
    want = tfc.NoisyNormal(loc=mu, scale=sigma).log_prob(y).numpy()
    np.testing.assert_allclose(np.asarray(y_log_prob(jnp.asarray(y), mu, sigma)), want, rtol=1e-4, atol=1e-4)


def test_msssim_matches_tf():
    from training.msssim import ms_ssim
    rng = np.random.default_rng(8)
    a = rng.random((2, 192, 208, 3)).astype(np.float32)     # TF needs >= 11 px at the 5th scale
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    want = tf.image.ssim_multiscale(a, b, 1.0).numpy()
    np.testing.assert_allclose(np.asarray(ms_ssim(jnp.asarray(a), jnp.asarray(b))), want, rtol=2e-4)
