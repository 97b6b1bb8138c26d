"""MS-SSIM in JAX, as tf.image.ssim_multiscale computes it (max_val 1, 11-tap sigma-1.5 Gaussian).

Only the training loss uses it (msssim_weight > 0); reported MS-SSIM comes from
evaluation/metrics.py. tests/test_jax_parity.py compares it with TF's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1, K2 = 0.01, 0.03


def _gauss(size: int, sigma: float = 1.5) -> np.ndarray:
    g = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(g ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).astype(np.float32)


def _filter(x, g):
    """Separable 'valid' Gaussian filter per channel, NHWC."""
    c = x.shape[-1]
    k = len(g)
    kv = jnp.tile(jnp.asarray(g).reshape(k, 1, 1, 1), (1, 1, 1, c))
    kh = jnp.tile(jnp.asarray(g).reshape(1, k, 1, 1), (1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kv, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)
    return jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)


def _ssim_parts(a, b):
    size = min(11, a.shape[1], a.shape[2])        # TF shrinks the window on small images
    g = _gauss(size)
    c1, c2 = K1 ** 2, K2 ** 2
    mu_a, mu_b = _filter(a, g), _filter(b, g)
    saa = _filter(a * a, g) - mu_a ** 2
    sbb = _filter(b * b, g) - mu_b ** 2
    sab = _filter(a * b, g) - mu_a * mu_b
    lum = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
    cs = (2 * sab + c2) / (saa + sbb + c2)
    return jnp.mean(lum * cs, axis=(1, 2)), jnp.mean(cs, axis=(1, 2))


def _down(x):
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    return 0.25 * (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2])


def ms_ssim(a, b):
    """Per-image MS-SSIM of NHWC images in [0, 1]."""
    css = []
    for i, _ in enumerate(POWER_FACTORS):
        ssim, cs = _ssim_parts(a, b)
        css.append(jax.nn.relu(ssim if i == len(POWER_FACTORS) - 1 else cs))
        if i < len(POWER_FACTORS) - 1:
            a, b = _down(a), _down(b)
    vals = jnp.stack(css, axis=-1) ** jnp.asarray(POWER_FACTORS)
    return jnp.mean(jnp.prod(vals, axis=-1), axis=-1)


def mean_ms_ssim(x, x_hat):
    """Batch mean of MS-SSIM with the reconstruction clipped to [0, 1]: the loss term."""
    return jnp.mean(ms_ssim(x, jnp.clip(x_hat, 0.0, 1.0)))
