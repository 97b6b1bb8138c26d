"""The training step in TensorFlow: the CPU backend of training.train (`--backend tf`).

Why: XLA:CPU has no fast convolution, and TF 2.14 runs convolutions and their gradients on
oneDNN, about 3x the JAX step on the same 2 cores (training/README.md, "Speed"). The loop,
data, validation, checkpoints and export are training.train's, shared with the JAX step
(training/jax_step.py); this file holds only what a backend must: the training graph on the
network's TF ops (models/tf_network.py), an Adam that is optax's, and the Trainer interface.

The graph is training/model.py's, written in TF: the same noise or straight-through
quantisation, tfc's likelihoods written out, the same loss object (training/loss.py).
The optimiser state is optax's `chain(clip_by_global_norm, scale_by_adam(eps=1e-7))`,
flattened the way jax.tree_util flattens it (count, then mu and nu by sorted key), so a
checkpoint written by either backend resumes in the other (tests/test_tf_step.py).
Crops are sampled on the host from a generator seeded by (seed, step) and the noise is
stateless in (step, seed): a run is a function of its step, as in the JAX backend.
"""

from __future__ import annotations

import time

import numpy as np

from models import network
from models import tf_network as T
from training.data import step_delta

LN2 = 0.6931471805599453
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-7      # optax.scale_by_adam defaults, Keras Adam's epsilon


def _tf():
    import tensorflow as tf
    return tf


def _log1mexp_diff(big, small):
    """log(exp(big) - exp(small)), small <= big (tfc's _logsum_expbig_minus_expsmall)."""
    tf = _tf()
    return tf.where(tf.math.is_inf(big), big, tf.math.log1p(-tf.exp(small - big)) + big)


def _noisy_log_prob(logits_fn, x):
    """log P(x) of a density convolved with U(-1/2, 1/2), from the logits of its CDF."""
    tf = _tf()
    lo, hi = logits_fn(x - 0.5), logits_fn(x + 0.5)
    logsf_hi, logsf_lo = tf.math.log_sigmoid(-hi), tf.math.log_sigmoid(-lo)
    logcdf_hi, logcdf_lo = tf.math.log_sigmoid(hi), tf.math.log_sigmoid(lo)
    right = logsf_hi < logcdf_hi
    return _log1mexp_diff(tf.where(right, logsf_lo, logcdf_hi), tf.where(right, logsf_hi, logcdf_lo))


def prior_logits(p: dict, z):
    """tfc.DeepFactorized._logits_cumulative; z is (..., C) with one density per channel C."""
    tf = _tf()
    shape = tf.shape(z)
    c = z.shape[-1]
    h = tf.transpose(tf.reshape(z, (-1, 1, c)), (2, 1, 0))                  # (C, 1, B)
    layers = len(network.PRIOR_FILTERS) + 1
    for i in range(layers):
        h = tf.linalg.matmul(tf.nn.softplus(p[f"z_prior/matrix_{i}"]), h) + p[f"z_prior/bias_{i}"]
        if i < layers - 1:
            h = h + tf.tanh(p[f"z_prior/factor_{i}"]) * tf.tanh(h)
    return tf.reshape(tf.transpose(h, (2, 1, 0)), shape)


def y_log_prob(y, mu, sigma):
    """tfc.NoisyNormal(mu, sigma).log_prob(y): the normal's log CDF and log SF are log_ndtr of +-(y-mu)/sigma."""
    from tensorflow_probability.python.internal.special_math import log_ndtr as ndtr  # tfp.Normal's own
    tf = _tf()
    lo, hi = (y - 0.5 - mu) / sigma, (y + 0.5 - mu) / sigma
    logsf_hi, logsf_lo, logcdf_hi, logcdf_lo = ndtr(-hi), ndtr(-lo), ndtr(hi), ndtr(lo)
    right = logsf_hi < logcdf_hi
    return _log1mexp_diff(tf.where(right, logsf_lo, logcdf_hi), tf.where(right, logsf_hi, logcdf_lo))


def _ste_round(x):
    tf = _tf()
    return x + tf.stop_gradient(tf.round(x) - x)


def forward(p: dict, x, noise=None, quantization: str = "noise", dtype=None, delta=1.0) -> dict:
    """training.model.forward in TF: `noise` (U(-1/2, 1/2) shaped like z and y) trains, None evaluates; g_s
    sees y quantised at `delta`, the rates stay at delta 1."""
    tf = _tf()
    y = T.apply(p, "analysis", x, dtype)
    z = T.apply(p, "hyper_analysis", y)
    if noise is None:
        z_hat = tf.round(z)
        mu, sigma = T.split_hyper(T.apply(p, "hyper_synthesis", z_hat))
        y_hat = mu + tf.round(y - mu)
        z_r, y_r = z_hat, y_hat
    else:
        z_noisy = z + noise[0]
        ste = quantization == "ste"
        z_hat = _ste_round(z) if ste else z_noisy
        mu, sigma = T.split_hyper(T.apply(p, "hyper_synthesis", z_hat))
        y_noisy = y + noise[1]
        y_hat = mu + delta * _ste_round((y - mu) / delta) if ste else y + delta * noise[1]
        z_r, y_r = z_noisy, y_noisy
    bits_z = -tf.reduce_sum(_noisy_log_prob(lambda v: prior_logits(p, v), z_r)) / LN2
    bits_y = -tf.reduce_sum(y_log_prob(y_r, mu, sigma)) / LN2
    x_hat = T.apply(p, "synthesis", y_hat, dtype)
    s = tf.shape(x)
    num_pixels = tf.cast(s[0] * s[1] * s[2], tf.float32)
    mse = tf.reduce_mean(tf.square(x * 255.0 - x_hat * 255.0))
    return {"bpp": (bits_y + bits_z) / num_pixels, "bpp_y": bits_y / num_pixels, "bpp_z": bits_z / num_pixels,
            "mse": mse, "x_hat": x_hat}


def tf_ms_ssim(x, x_hat):
    """The MS-SSIM loss term with TF's own tf.image.ssim_multiscale (what training/msssim.py reproduces)."""
    tf = _tf()
    return tf.reduce_mean(tf.image.ssim_multiscale(x, tf.clip_by_value(x_hat, 0.0, 1.0), 1.0))


def sample_crops(pool: tuple, rng: np.random.Generator, batch: int, patch: int) -> np.ndarray:
    """training.data.sample_crops on the host (uniform image, uniform position, h/v flips), float32 in [0, 1]."""
    pixels, offsets, heights, widths = pool
    idx = rng.integers(0, len(offsets), batch)
    h, w = heights[idx].astype(np.int64), widths[idx].astype(np.int64)
    y = np.floor(rng.random(batch) * (h - patch + 1)).astype(np.int64)
    x = np.floor(rng.random(batch) * (w - patch + 1)).astype(np.int64)
    r = np.arange(patch)
    flat = (offsets[idx].astype(np.int64)[:, None, None] + ((y[:, None] + r)[:, :, None]) * w[:, None, None]
            + (x[:, None] + r)[:, None, :])
    crops = pixels[flat]
    flip_h, flip_v = rng.random(batch) < 0.5, rng.random(batch) < 0.5
    crops[flip_h] = crops[flip_h, :, ::-1]
    crops[flip_v] = crops[flip_v, ::-1]
    return crops.astype(np.float32) / 255.0


class Trainer:
    """The TF backend: variables, optax's Adam, the traced step and evaluation (training.train's interface).

    The state passed through training.train is this object's own variables (`place` returns self), so a
    step updates them in place and returns the metrics as a numpy row: TF on a CPU runs synchronously.
    """

    backend = "tf"
    lead = True

    def __init__(self, cfg, pool_arrays: tuple):
        import tensorflow as tf

        from training.loss import Loss
        from training.schedule import learning_rate
        tf.config.experimental.enable_tensor_float_32_execution(False)
        self.cfg, self.pool = cfg, pool_arrays
        self.loss = Loss(cfg.loss, cfg.lmbda, cfg.mse_weight, cfg.msssim_weight)
        self.dtype = None if cfg.compute_dtype == "float32" else tf.dtypes.as_dtype(cfg.compute_dtype)
        self._lr = learning_rate
        self.vars: dict = {}
        self.count = None
        self.mu: dict = {}
        self.nu: dict = {}
        self._step_fn = self._eval_fn = None

    # -- state ---------------------------------------------------------------------------------------------
    def place(self, params: dict, leaves: list | None = None):
        """Load parameters (and optax-ordered Adam leaves, else fresh moments) into the variables."""
        import tensorflow as tf
        keys = sorted(params)
        if leaves is None:
            leaves = [np.int32(0)] + [np.zeros_like(params[k], np.float32) for k in keys] * 2
        if len(leaves) != 1 + 2 * len(keys):
            raise ValueError(f"optimiser state has {len(leaves)} leaves, expected {1 + 2 * len(keys)}")
        values = {"p": params, "m": dict(zip(keys, leaves[1:1 + len(keys)])),
                  "v": dict(zip(keys, leaves[1 + len(keys):]))}
        if not self.vars or sorted(self.vars) != keys:
            self.vars = {k: tf.Variable(np.asarray(params[k], np.float32), name=k.replace("/", "."))
                         for k in keys}
            self.mu = {k: tf.Variable(np.asarray(values["m"][k], np.float32)) for k in keys}
            self.nu = {k: tf.Variable(np.asarray(values["v"][k], np.float32)) for k in keys}
            self.count = tf.Variable(np.int32(leaves[0]), dtype=tf.int32)
            self._step_fn = self._eval_fn = None
        else:
            for k in keys:
                self.vars[k].assign(np.asarray(params[k], np.float32))
                self.mu[k].assign(np.asarray(values["m"][k], np.float32))
                self.nu[k].assign(np.asarray(values["v"][k], np.float32))
            self.count.assign(np.int32(leaves[0]))
        return self, None

    def host_params(self, state) -> dict:
        return {k: v.numpy() for k, v in self.vars.items()}

    def host_leaves(self, state) -> list[np.ndarray]:
        keys = sorted(self.vars)
        return ([np.asarray(self.count.numpy(), np.int32)] + [self.mu[k].numpy() for k in keys]
                + [self.nu[k].numpy() for k in keys])

    def device_name(self) -> str:
        import tensorflow as tf

        from models.cpu import onednn_on
        return f"TF {tf.__version__} CPU ({'oneDNN' if onednn_on() else 'Eigen'})"

    # -- the step ------------------------------------------------------------------------------------------
    def _build(self):
        import tensorflow as tf
        cfg, keys = self.cfg, sorted(self.vars)
        spec = tf.TensorSpec((cfg.batch, cfg.patch, cfg.patch, 3), tf.float32)
        scalar = tf.TensorSpec((), tf.float32)

        @tf.function(input_signature=[spec, tf.TensorSpec((2,), tf.int32), scalar, scalar, scalar, scalar])
        def step(x, seed, lr, rt, beta, delta):
            with tf.GradientTape() as tape:
                y_shape = tf.stack([cfg.batch, cfg.patch // 16, cfg.patch // 16, cfg.latent_channels])
                z_shape = tf.stack([cfg.batch, cfg.patch // 64, cfg.patch // 64, cfg.num_filters])
                noise = (tf.random.stateless_uniform(z_shape, seed, -0.5, 0.5),
                         tf.random.stateless_uniform(y_shape, seed + tf.constant([0, 1], tf.int32), -0.5, 0.5))
                out = forward(self.vars, x, noise, cfg.quantization, self.dtype, delta)
                value = self.loss(out, x, rt, beta, ms_ssim=tf_ms_ssim)
            grads = tape.gradient(value, [self.vars[k] for k in keys])
            if cfg.clipnorm:
                norm = tf.linalg.global_norm(grads)
                grads = [tf.where(norm < cfg.clipnorm, g, g / norm * cfg.clipnorm) for g in grads]
            count = tf.cast(self.count.assign_add(1), tf.float32)
            c1, c2 = 1.0 - ADAM_B1 ** count, 1.0 - ADAM_B2 ** count
            for k, g in zip(keys, grads):
                m = self.mu[k].assign((1.0 - ADAM_B1) * g + ADAM_B1 * self.mu[k])
                v = self.nu[k].assign((1.0 - ADAM_B2) * tf.square(g) + ADAM_B2 * self.nu[k])
                self.vars[k].assign_sub(lr * ((m / c1) / (tf.sqrt(v / c2) + ADAM_EPS)))
            return tf.stack([value, out["bpp"], out["mse"]])

        @tf.function(input_signature=[tf.TensorSpec((1, None, None, 3), tf.float32)])
        def evaluate(x):
            out = forward(self.vars, x)
            return tf.stack([out["bpp"], out["mse"]])
        @tf.function(input_signature=[tf.TensorSpec((1, None, None, 3), tf.float32)])
        def reconstruct(x):
            return forward(self.vars, x)["x_hat"]
        self._step_fn, self._eval_fn, self._rec_fn = step, evaluate, reconstruct

    def batch(self, step: int) -> np.ndarray:
        """The step's crops: a function of (seed, step), so a resumed run sees what an unbroken one would."""
        return sample_crops(self.pool, np.random.default_rng([self.cfg.seed, step]), self.cfg.batch, self.cfg.patch)

    def step(self, state, step: int, rt: float, beta: float, x: np.ndarray | None = None):
        """One optimiser step on the step's crops (or on `x`); returns (state, metrics [loss, bpp, mse])."""
        if self._step_fn is None:
            self._build()
        lr = float(self._lr(self.cfg, step, int(self.count.numpy()), xp=np))
        x = self.batch(step) if x is None else x
        seed = np.array([step % 2 ** 31, self.cfg.seed], np.int32)
        delta = np.float32(step_delta(self.cfg.delta_range, self.cfg.seed, step))
        return self, self._step_fn(x, seed, np.float32(lr), np.float32(rt), np.float32(beta), delta).numpy()

    def fetch(self, pending: list) -> np.ndarray:
        return np.stack(pending)

    def compile(self, state, eval_shapes: list[tuple]) -> float:
        """Trace the step and the evaluation before the clock starts (tracing runs nothing: state is untouched)."""
        t = time.time()
        if self._step_fn is None:
            self._build()
        self._step_fn.get_concrete_function()
        self._eval_fn.get_concrete_function()
        return time.time() - t

    def reconstruct(self, state, images: list[np.ndarray]) -> list[np.ndarray]:
        """The float reconstructions (rounded latents) of uint8 images, for TensorBoard."""
        if self._eval_fn is None:
            self._build()
        return [self._rec_fn(im[None].astype(np.float32) / 255.0).numpy()[0] for im in images]

    def estimate(self, state, images: list[np.ndarray]) -> tuple[list[float], list[float]]:
        """Per-image estimated bpp (rounded latents' likelihoods) and PSNR-RGB of the float reconstruction."""
        from evaluation.metrics import psnr_from_mse
        if self._eval_fn is None:
            self._build()
        bpp, psnr = [], []
        for img in images:
            b, m = self._eval_fn(img[None].astype(np.float32) / 255.0).numpy()
            bpp.append(float(b))
            psnr.append(psnr_from_mse(float(m)))
        return bpp, psnr
