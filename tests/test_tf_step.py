"""The TF (oneDNN) training step equals the JAX one: losses, gradients, the Adam update, and a checkpoint
written by either resumes in the other."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import tensorflow as tf  # noqa: E402

from models import jax_transforms as J  # noqa: E402
from training import model as JM  # noqa: E402
from training import tf_step as TS  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.loss import Loss  # noqa: E402

N, M, B, P = 16, 24, 2, 64


def _params(seed: int = 0) -> dict:
    """Fresh parameters, nudged off their initial symmetry so every gradient is non-trivial."""
    p = {k: np.asarray(v) for k, v in J.init(jax.random.PRNGKey(seed), N, M).items()}
    rng = np.random.default_rng(seed)
    return {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in p.items()}


def _batch(seed: int = 1) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.random((B, P, P, 3), dtype=np.float32)
    noise = (rng.uniform(-0.5, 0.5, (B, P // 64, P // 64, N)).astype(np.float32),
             rng.uniform(-0.5, 0.5, (B, P // 16, P // 16, M)).astype(np.float32))
    return x, noise


def _jax_loss_grads(params, x, noise, loss, quant, delta=1.0):
    def objective(p):
        return loss(JM.forward(p, jnp.asarray(x), quantization=quant, noise=tuple(map(jnp.asarray, noise)),
                               delta=delta), x, 0.3, 50.0)
    value, grads = jax.value_and_grad(objective)(params)
    return float(value), {k: np.asarray(v) for k, v in grads.items()}


def _tf_loss_grads(params, x, noise, loss, quant, delta=1.0):
    v = {k: tf.Variable(a) for k, a in params.items()}
    with tf.GradientTape() as tape:
        out = TS.forward(v, tf.constant(x), tuple(map(tf.constant, noise)), quant, delta=tf.constant(delta))
        value = loss(out, tf.constant(x), 0.3, 50.0, ms_ssim=TS.tf_ms_ssim)
    grads = tape.gradient(value, [v[k] for k in sorted(v)])
    return float(value), {k: g.numpy() for k, g in zip(sorted(v), grads)}


def _assert_grads_close(a: dict, b: dict, rtol: float = 1e-4) -> None:
    """Per tensor, relative to the tensor's largest gradient: summation order differs between the backends."""
    for k in a:
        scale = max(np.abs(a[k]).max(), 1e-12)
        np.testing.assert_allclose(b[k] / scale, a[k] / scale, rtol=0, atol=rtol * 10, err_msg=k)
        assert np.linalg.norm(b[k] - a[k]) <= rtol * 10 * max(np.linalg.norm(a[k]), 1e-12), k


@pytest.mark.parametrize("kind,quant,delta", [("lambda", "noise", 1.0), ("guerin", "ste", 1.0),
                                               ("guerin", "ste", 1.37), ("lambda", "noise", 0.71)])
def test_tf_and_jax_give_equal_losses_and_gradients(kind, quant, delta):
    params, (x, noise) = _params(), _batch()
    loss = Loss(kind, 0.01)
    lj, gj = _jax_loss_grads(params, x, noise, loss, quant, delta)
    lt, gt = _tf_loss_grads(params, x, noise, loss, quant, delta)
    assert lt == pytest.approx(lj, rel=1e-4)
    _assert_grads_close(gj, gt)


def test_a_training_delta_quantises_what_g_s_sees_and_leaves_the_rates_at_delta_1():
    params, (x, noise) = _params(), _batch()
    params["analysis/conv_3/kernel"] = params["analysis/conv_3/kernel"] * 200.0   # latents of a few units, as trained
    x, noise = jnp.asarray(x), tuple(map(jnp.asarray, noise))
    one = JM.forward(params, x, quantization="ste", noise=noise)
    two = JM.forward(params, x, quantization="ste", noise=noise, delta=2.0)
    assert float(two["bpp"]) == float(one["bpp"])                    # the rate constraint means what it meant
    assert float(two["mse"]) != pytest.approx(float(one["mse"]), rel=1e-3)
    coarse = JM.forward(params, x, quantization="ste", noise=noise, delta=4.0)
    assert float(coarse["mse"]) > float(two["mse"]) > float(one["mse"])   # a coarser step costs g_s more


def test_step_delta_is_log_uniform_in_its_range_and_a_function_of_the_step():
    from training.data import step_delta
    assert step_delta([1.0, 1.0], 1, 123) == 1.0
    ds = np.array([step_delta([0.7, 1.4], 1, s) for s in range(4000)])
    assert ds.min() >= 0.7 and ds.max() <= 1.4
    assert abs(np.median(np.log(ds)) - np.log(0.7 * 1.4) / 2) < 0.03        # log-uniform: median at the geometric mean
    assert step_delta([0.7, 1.4], 1, 17) == step_delta([0.7, 1.4], 1, 17) != step_delta([0.7, 1.4], 2, 17)


def test_a_bad_delta_range_is_refused():
    from training.config import load
    for bad in ("[0.0, 1.0]", "[1.4, 0.7]", "[1.0]"):
        with pytest.raises(ValueError, match="delta_range"):
            load(None, [f"delta_range={bad}"])


def test_the_gradient_check_can_fail():
    """A perturbed parameter set gives gradients the check refuses (the tolerance is not vacuous)."""
    params, (x, noise) = _params(), _batch()
    loss = Loss("lambda", 0.01)
    _, gj = _jax_loss_grads(params, x, noise, loss, "noise")
    other = dict(params, **{"synthesis/deconv_3/kernel": params["synthesis/deconv_3/kernel"] * 1.01})
    _, gt = _tf_loss_grads(other, x, noise, loss, "noise")
    with pytest.raises(AssertionError):
        _assert_grads_close(gj, gt)


@pytest.mark.slow
def test_tf_adam_step_is_optax():
    """One TF optimiser step (clip, Adam with bias correction, warm-up lr) lands where optax's does."""
    import optax

    from training.schedule import learning_rate
    cfg = TrainConfig(num_filters=N, latent_channels=M, batch=B, patch=P, lr=1e-3, warmup_steps=4, clipnorm=1.0)
    params, (x, _) = _params(), _batch()
    pool = (np.zeros(P * P * 3, np.uint8).reshape(-1, 3), np.zeros(1, np.int64), np.full(1, P), np.full(1, P))
    tr = TS.Trainer(cfg, pool)
    tr.place(params)
    step = 3
    seed = tf.constant([step, cfg.seed], tf.int32)
    noise = (tf.random.stateless_uniform((B, P // 64, P // 64, N), seed, -0.5, 0.5).numpy(),
             tf.random.stateless_uniform((B, P // 16, P // 16, M), seed + tf.constant([0, 1]), -0.5, 0.5).numpy())
    _, metrics = tr.step(None, step, 0.5, 100.0, x=x)
    got = tr.host_params(None)

    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(eps=1e-7))
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    loss = Loss("lambda", cfg.lmbda)
    _, grads = _jax_loss_grads(params, x, noise, loss, "noise")
    updates, state = opt.update({k: jnp.asarray(g) for k, g in grads.items()}, opt.init(jp), jp)
    lr = float(learning_rate(cfg, step, 0))
    for k in params:
        want = params[k] - lr * np.asarray(updates[k])
        np.testing.assert_allclose(got[k], want, rtol=0, atol=1e-6 + 1e-3 * lr, err_msg=k)
    leaves = tr.host_leaves(None)
    assert int(leaves[0]) == 1 and len(leaves) == len(jax.tree_util.tree_leaves(state))
    for a, b in zip(leaves[1:], jax.tree_util.tree_leaves(state)[1:]):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-3, atol=1e-9)


def test_host_crops_follow_the_step():
    """The TF backend's crops are a function of (seed, step): a resumed run sees what an unbroken one would."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (80, 96, 3), np.uint8)
    pool = (img.reshape(-1, 3), np.zeros(1, np.int64), np.full(1, 80), np.full(1, 96))
    a = TS.sample_crops(pool, np.random.default_rng([1, 7]), 4, 32)
    b = TS.sample_crops(pool, np.random.default_rng([1, 7]), 4, 32)
    c = TS.sample_crops(pool, np.random.default_rng([1, 8]), 4, 32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    crop = (a[0] * 255).round().astype(np.uint8)            # every crop is a (flipped) window of the image
    found = any(np.array_equal(crop, w[y:y + 32, x:x + 32]) for w in (img, img[::-1], img[:, ::-1], img[::-1, ::-1])
                for y in range(49) for x in range(65))
    assert found
