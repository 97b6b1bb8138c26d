"""The training graph: mean-scale hyperprior (Minnen et al. 2018), rate terms, and the two losses.

One copy, in JAX (the TF training model is retired). The transforms are the codec's
(models/jax_transforms.py); the likelihoods are tfc's, written out:
- z: tfc.NoisyDeepFactorized (Balle et al. 2018, appendix 6.1), the density convolved
  with a unit uniform, evaluated as tfc.UniformNoiseAdapter does (log survival
  function right of the median, log CDF left of it);
- y: tfc.NoisyNormal(mu, sigma), likewise.
tests/test_jax_parity.py pins both against tfc on the same parameters.

Quantisation in training: additive uniform noise for the rate terms. What g_s and h_s
see is either the noisy latents ('noise', from scratch: at initialisation |y| << 0.5,
so rounding would pass almost no signal) or straight-through rounding ('ste', for
fine-tuning: g_s then sees the integers it gets at inference).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

from models import jax_transforms as J
from training.loss import Loss  # noqa: F401 - the losses are backend-neutral

LN2 = 0.6931471805599453


def _ste_round(x):
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _log1mexp_diff(big, small):
    """log(exp(big) - exp(small)), small <= big (tfc's _logsum_expbig_minus_expsmall)."""
    return jnp.where(jnp.isinf(big), big, jnp.log1p(-jnp.exp(small - big)) + big)


def _noisy_log_prob(logits_fn, x):
    """log P(x) of a density convolved with U(-1/2, 1/2), from the logits of its CDF."""
    lo, hi = logits_fn(x - 0.5), logits_fn(x + 0.5)
    logsf_hi, logsf_lo = jax.nn.log_sigmoid(-hi), jax.nn.log_sigmoid(-lo)
    logcdf_hi, logcdf_lo = jax.nn.log_sigmoid(hi), jax.nn.log_sigmoid(lo)
    right = logsf_hi < logcdf_hi
    big = jnp.where(right, logsf_lo, logcdf_hi)
    small = jnp.where(right, logsf_hi, logcdf_lo)
    return _log1mexp_diff(big, small)


def prior_logits(p: J.Params, z):
    """tfc.DeepFactorized._logits_cumulative; z is (..., C) with one density per channel C."""
    shape = z.shape
    c = shape[-1]
    h = jnp.transpose(z.reshape(-1, 1, c), (2, 1, 0))                    # (C, 1, B)
    layers = len(J.PRIOR_FILTERS) + 1
    for i in range(layers):
        h = jnp.matmul(jax.nn.softplus(p[f"z_prior/matrix_{i}"]), h) + p[f"z_prior/bias_{i}"]
        if i < layers - 1:
            h = h + jnp.tanh(p[f"z_prior/factor_{i}"]) * jnp.tanh(h)
    return jnp.transpose(h, (2, 1, 0)).reshape(shape)


def z_log_prob(p: J.Params, z):
    return _noisy_log_prob(lambda v: prior_logits(p, v), z)


def y_log_prob(y, mu, sigma):
    """tfc.NoisyNormal(mu, sigma).log_prob(y): the normal's log CDF and log SF are log_ndtr of +-(y-mu)/sigma."""
    lo, hi = (y - 0.5 - mu) / sigma, (y + 0.5 - mu) / sigma
    logsf_hi, logsf_lo = log_ndtr(-hi), log_ndtr(-lo)
    logcdf_hi, logcdf_lo = log_ndtr(hi), log_ndtr(lo)
    right = logsf_hi < logcdf_hi
    return _log1mexp_diff(jnp.where(right, logsf_lo, logcdf_hi), jnp.where(right, logsf_hi, logcdf_lo))


def forward(p: J.Params, x, key=None, quantization: str = "noise", dtype=None, noise=None, delta=1.0) -> dict:
    """x (NHWC, 0..1) -> bpp, bpp_y, bpp_z, mse (0..255 scale), x_hat.

    key=None (and no `noise`) is evaluation: latents are rounded (z_hat = round(z), y_hat = mu + round(y - mu),
    as the codec codes them) and the rates are the discrete likelihoods of those integers. `noise`, a pair of
    U(-1/2, 1/2) arrays shaped like z and y, replaces the key's (the cross-backend tests feed both the same).
    In training, g_s sees y quantised at step `delta` (mu + delta * round((y - mu) / delta), or noise of that
    width) while the rates stay at delta 1 (training/data.py step_delta says why).
    """
    y = J.analysis(p, x, dtype)
    z = J.hyper_analysis(p, y)
    if key is None and noise is None:
        z_hat = jnp.round(z)
        mu, sigma = J.split_hyper(J.hyper_synthesis(p, z_hat))
        y_hat = mu + jnp.round(y - mu)
        z_r, y_r = z_hat, y_hat
    else:
        if noise is None:
            kz, ky = jax.random.split(key)
            noise = (jax.random.uniform(kz, z.shape, z.dtype, -0.5, 0.5),
                     jax.random.uniform(ky, y.shape, y.dtype, -0.5, 0.5))
        z_noisy = z + noise[0]
        ste = quantization == "ste"
        z_hat = _ste_round(z) if ste else z_noisy
        mu, sigma = J.split_hyper(J.hyper_synthesis(p, z_hat))
        y_noisy = y + noise[1]
        y_hat = mu + delta * _ste_round((y - mu) / delta) if ste else y + delta * noise[1]
        z_r, y_r = z_noisy, y_noisy
    bits_z = -jnp.sum(z_log_prob(p, z_r)) / LN2
    bits_y = -jnp.sum(y_log_prob(y_r, mu, sigma)) / LN2
    x_hat = J.synthesis(p, y_hat, dtype)
    num_pixels = x.shape[0] * x.shape[1] * x.shape[2]
    mse = jnp.mean(jnp.square(x * 255.0 - x_hat * 255.0))
    return {"bpp": (bits_y + bits_z) / num_pixels, "bpp_y": bits_y / num_pixels, "bpp_z": bits_z / num_pixels,
            "mse": mse, "x_hat": x_hat}
