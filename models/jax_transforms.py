"""The four transforms of models/transforms.py, in JAX, on the same parameters.

Why a second implementation: TensorFlow 2.14 cannot run on the lent accelerator
(Python 3.12, no TF wheels), JAX can. The trainer (training/) and an optional
GPU decode backend run these; the codec's Keras layers stay the reference, and
tests/test_jax_parity.py pins both to each other on the same weights.

Parameters are a flat dict keyed by `<transform>/<layer>/<variable>`, holding the
Keras tensors as Keras stores them: conv kernels (k, k, in, out), transposed-conv
kernels (k, k, out, in), and tfc.GDN's reparametrised beta and gamma. `ORDER`
lists the keys in the order of the retired Keras training model's `weights`, which
is the order of the committed resume states (w000, w001, ...).

Transposed convolutions run as a stride-1 3x3 convolution to 4*C channels plus a
depth-to-space (sub-pixel form). It equals Keras's Conv2DTranspose(5, 2, 'same')
exactly (up to summation order), and XLA:CPU differentiates it ~5x faster than
`lax.conv_transpose` (../shared/notes/accelerator-training-probe.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models import scale_table

Params = dict  # str -> array

# tfc.GDNParameter: value = max(v, sqrt(minimum + offset^2))^2 - offset^2, offset = 2^-18.
GDN_PEDESTAL = (2.0 ** -18) ** 2
GDN_BETA_MIN = 1e-6
LOG2_SCALE_MIN = scale_table.LOG2_SCALE_MIN
LOG2_SCALE_MAX = scale_table.LOG2_SCALE_MAX
PRIOR_FILTERS = (3, 3)            # tfc.DeepFactorized default hidden widths
PRIOR_INIT_SCALE = 10.0


# -- the parameter layout ------------------------------------------------------------------------------

def _conv(prefix: str, k: int, cin: int, cout: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}/kernel", (k, k, cin, cout)), (f"{prefix}/bias", (cout,))]


def _deconv(prefix: str, k: int, cin: int, cout: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}/kernel", (k, k, cout, cin)), (f"{prefix}/bias", (cout,))]


def _gdn(prefix: str, c: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}/reparam_beta", (c,)), (f"{prefix}/reparam_gamma", (c, c))]


def layout(num_filters: int, latent_channels: int) -> list[tuple[str, tuple]]:
    """(key, shape) of every tensor, in the committed states' order."""
    n, m = num_filters, latent_channels
    out: list[tuple[str, tuple]] = []
    cin = 3
    for i in range(3):
        out += _conv(f"analysis/conv_{i}", 5, cin, n) + _gdn(f"analysis/gdn_{i}", n)
        cin = n
    out += _conv("analysis/conv_3", 5, n, m)
    cin = m
    for i in range(3):
        out += _deconv(f"synthesis/deconv_{i}", 5, cin, n) + _gdn(f"synthesis/igdn_{i}", n)
        cin = n
    out += _deconv("synthesis/deconv_3", 5, n, 3)
    out += _conv("hyper_analysis/conv_0", 3, m, n) + _conv("hyper_analysis/conv_1", 5, n, n)
    out += _conv("hyper_analysis/conv_2", 5, n, n)
    out += _deconv("hyper_synthesis/deconv_0", 5, n, n) + _deconv("hyper_synthesis/deconv_1", 5, n, n * 3 // 2)
    out += _conv("hyper_synthesis/conv_2", 3, n * 3 // 2, 2 * m)
    f = (1,) + PRIOR_FILTERS + (1,)
    nl = len(PRIOR_FILTERS) + 1
    out += [(f"z_prior/bias_{i}", (n, f[i + 1], 1)) for i in range(nl)]
    out += [(f"z_prior/factor_{i}", (n, f[i + 1], 1)) for i in range(nl - 1)]
    out += [(f"z_prior/matrix_{i}", (n, f[i + 1], f[i])) for i in range(nl)]
    return out


def ordered(params: Params) -> list[tuple[str, object]]:
    """(key, tensor) in the committed states' order (a pytree's dict order is sorted, not this)."""
    return [(k, params[k]) for k, _ in layout(*widths_of(params))]


def sub(params: Params, transform: str) -> list:
    """The tensors of one transform, in Keras `weights` order (what the model files store)."""
    return [v for k, v in ordered(params) if k.startswith(transform + "/")]


def widths_of(params: Params) -> tuple[int, int]:
    """(N, M) read off the parameter shapes."""
    k = params["analysis/conv_3/kernel"]
    return int(k.shape[2]), int(k.shape[3])


def init(key, num_filters: int, latent_channels: int) -> Params:
    """Fresh parameters as Keras/tfc initialise them (Glorot-uniform kernels, GDN beta=1, gamma=0.1*I)."""
    import jax
    import jax.numpy as jnp
    p: Params = {}
    items = layout(num_filters, latent_channels)
    keys = jax.random.split(key, len(items))
    scale = PRIOR_INIT_SCALE ** (1 / (len(PRIOR_FILTERS) + 1))
    f = (1,) + PRIOR_FILTERS + (1,)
    for (name, shape), k in zip(items, keys):
        leaf = name.rsplit("/", 1)[1]
        if leaf == "kernel":
            kh, kw, a, b = shape      # Glorot fan-in/out; symmetric in a, b, so layout does not matter
            lim = np.sqrt(6.0 / (kh * kw * (a + b)))
            p[name] = jax.random.uniform(k, shape, jnp.float32, -lim, lim)
        elif leaf == "bias":
            p[name] = jnp.zeros(shape, jnp.float32)
        elif leaf == "reparam_beta":
            p[name] = jnp.full(shape, np.sqrt(1.0 + GDN_PEDESTAL), jnp.float32)
        elif leaf == "reparam_gamma":
            p[name] = jnp.sqrt(jnp.maximum(0.1 * jnp.eye(shape[0]) + GDN_PEDESTAL, GDN_PEDESTAL)).astype(jnp.float32)
        elif leaf.startswith("matrix_"):
            i = int(leaf.split("_")[1])
            v = np.log(np.expm1(1 / scale / f[i + 1]))
            p[name] = jnp.full(shape, v, jnp.float32)
        elif leaf.startswith("bias_"):
            p[name] = jax.random.uniform(k, shape, jnp.float32, -0.5, 0.5)
        elif leaf.startswith("factor_"):
            p[name] = jnp.zeros(shape, jnp.float32)
    return p


# -- building blocks -------------------------------------------------------------------------------------

def lower_bound(x, bound: float):
    """tfc.lower_bound: max(x, bound), with the gradient passed where it pushes x back above the bound."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def f(v):
        return jnp.maximum(v, bound)

    def fwd(v):
        return jnp.maximum(v, bound), v

    def bwd(v, g):
        return (jnp.where((v >= bound) | (g < 0), g, 0.0).astype(g.dtype),)   # descent direction -g raises v

    f.defvjp(fwd, bwd)
    return f(x)


def upper_bound(x, bound: float):
    return -lower_bound(-x, -bound)


def _gdn_value(v, minimum: float):
    return lower_bound(v, float(np.sqrt(minimum + GDN_PEDESTAL))) ** 2 - GDN_PEDESTAL


def conv(x, kernel, bias, stride: int = 1):
    """Keras Conv2D(padding='same'), NHWC, kernel (k, k, in, out)."""
    from jax import lax
    y = lax.conv_general_dilated(x, kernel.astype(x.dtype), (stride, stride), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(y.dtype)


# Sub-pixel form of a 5x5 stride-2 'same' transposed conv: out[2m + r] sums x[m + d] * w[a] with
# (phase r, offset d) -> tap a:  r=0: d=-1 -> 3, d=0 -> 1;  r=1: d=-1 -> 4, d=0 -> 2, d=+1 -> 0.
_TAP = {(0, 0): 3, (0, 1): 1, (1, 0): 4, (1, 1): 2, (1, 2): 0}   # (phase, d + 1) -> kernel tap; absent: zero


def _subpixel_kernel(kernel):
    """(5, 5, out, in) Keras transposed kernel -> (3, 3, in, 4*out) stride-1 kernel, phases (r, c) major."""
    import jax.numpy as jnp
    k = jnp.transpose(kernel, (0, 1, 3, 2))                          # (5, 5, in, out)
    zero = jnp.zeros_like(k[0, 0])
    rows = []
    for dy in range(3):
        cols = []
        for dx in range(3):
            phases = []
            for r in range(2):
                for c in range(2):
                    a, b = _TAP.get((r, dy)), _TAP.get((c, dx))
                    phases.append(zero if a is None or b is None else k[a, b])
            cols.append(jnp.concatenate(phases, axis=-1))            # (in, 4*out)
        rows.append(jnp.stack(cols))
    return jnp.stack(rows)                                           # (3, 3, in, 4*out)


def deconv(x, kernel, bias):
    """Keras Conv2DTranspose(5, strides=2, padding='same'), kernel (5, 5, out, in)."""
    import jax.numpy as jnp
    if kernel.shape[:2] != (5, 5):
        raise ValueError(f"only 5x5 stride-2 transposed convs are supported, got {kernel.shape}")
    b, h, w, _ = x.shape
    cout = kernel.shape[2]
    y = conv(x, _subpixel_kernel(kernel), jnp.zeros((4 * cout,), x.dtype))
    y = y.reshape(b, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, cout)
    return y + bias.astype(y.dtype)


def gdn(x, reparam_beta, reparam_gamma, inverse: bool = False):
    """tfc.GDN (alpha = epsilon = 1): x / (beta + |x| @ gamma), or x * (...) when inverse."""
    beta = _gdn_value(reparam_beta, GDN_BETA_MIN)
    gamma = _gdn_value(reparam_gamma, 0.0)
    norm = abs(x) @ gamma.astype(x.dtype) + beta.astype(x.dtype)
    return x * norm if inverse else x / norm


# -- the transforms ------------------------------------------------------------------------------------

def analysis(p: Params, x, dtype=None):
    """Image (0..1, NHWC) -> y at 1/16 resolution. `dtype` sets the conv compute type (e.g. bfloat16)."""
    import jax.numpy as jnp
    h = x - 0.5
    for i in range(3):
        h = conv(h if dtype is None else h.astype(dtype), p[f"analysis/conv_{i}/kernel"],
                 p[f"analysis/conv_{i}/bias"], 2).astype(jnp.float32)
        h = gdn(h, p[f"analysis/gdn_{i}/reparam_beta"], p[f"analysis/gdn_{i}/reparam_gamma"])
    h = conv(h if dtype is None else h.astype(dtype), p["analysis/conv_3/kernel"], p["analysis/conv_3/bias"], 2)
    return h.astype(jnp.float32)


def synthesis(p: Params, y, dtype=None):
    """y_hat -> image (0..1)."""
    import jax.numpy as jnp
    h = y
    for i in range(3):
        h = deconv(h if dtype is None else h.astype(dtype), p[f"synthesis/deconv_{i}/kernel"],
                   p[f"synthesis/deconv_{i}/bias"]).astype(jnp.float32)
        h = gdn(h, p[f"synthesis/igdn_{i}/reparam_beta"], p[f"synthesis/igdn_{i}/reparam_gamma"], inverse=True)
    h = deconv(h if dtype is None else h.astype(dtype), p["synthesis/deconv_3/kernel"], p["synthesis/deconv_3/bias"])
    return h.astype(jnp.float32) + 0.5


def hyper_analysis(p: Params, y):
    import jax.nn as nn
    h = nn.relu(conv(y, p["hyper_analysis/conv_0/kernel"], p["hyper_analysis/conv_0/bias"]))
    h = nn.relu(conv(h, p["hyper_analysis/conv_1/kernel"], p["hyper_analysis/conv_1/bias"], 2))
    return conv(h, p["hyper_analysis/conv_2/kernel"], p["hyper_analysis/conv_2/bias"], 2)


def hyper_synthesis(p: Params, z_hat):
    """z_hat -> (mu, log2 sigma before bounding), concatenated as the Keras layer outputs them."""
    import jax.nn as nn
    h = nn.relu(deconv(z_hat, p["hyper_synthesis/deconv_0/kernel"], p["hyper_synthesis/deconv_0/bias"]))
    h = nn.relu(deconv(h, p["hyper_synthesis/deconv_1/kernel"], p["hyper_synthesis/deconv_1/bias"]))
    return conv(h, p["hyper_synthesis/conv_2/kernel"], p["hyper_synthesis/conv_2/bias"])


def split_hyper(h) -> tuple:
    """Hyper-synthesis output -> (mu, sigma), log2 sigma bounded to the scale table's range."""
    import jax.numpy as jnp
    m = h.shape[-1] // 2
    mu, log2_sigma = h[..., :m], h[..., m:]
    log2_sigma = upper_bound(lower_bound(log2_sigma, LOG2_SCALE_MIN), LOG2_SCALE_MAX)
    return mu, jnp.exp2(log2_sigma)


TRANSFORMS: dict[str, Callable] = {"analysis": analysis, "synthesis": synthesis,
                                   "hyper_analysis": hyper_analysis, "hyper_synthesis": hyper_synthesis}
