"""The JAX backend of the network in models/network.py: the accelerator's training step and the
JAX decode backend run these.

Why JAX at all: TensorFlow 2.14 cannot run on the accelerator machines we are lent
(Python 3.12, no TF wheels), JAX can. On the CPU the TF backend (models/tf_network.py)
trains, because XLA:CPU has no fast convolution. tests/test_jax_parity.py and
tests/test_tf_step.py pin the backends to each other and to the codec on the same weights.

Transposed convolutions run as a stride-1 3x3 convolution to 4*C channels plus a
depth-to-space (sub-pixel form). It equals Keras's Conv2DTranspose(5, 2, 'same')
exactly (up to summation order), and XLA:CPU differentiates it ~5x faster than
`lax.conv_transpose` (../shared/notes/accelerator-training-probe.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models import network
from models.network import GDN_BETA_MIN, GDN_PEDESTAL, LOG2_SCALE_MAX, LOG2_SCALE_MIN, PRIOR_FILTERS, PRIOR_INIT_SCALE  # noqa: F401

Params = dict  # str -> array


# -- the parameter layout (models/network.py) -----------------------------------------------------------

layout = network.layout
ordered = network.ordered
sub = network.sub
widths_of = network.widths_of


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

def apply(p: Params, transform: str, x, dtype=None):
    """One transform of models/network.py. `dtype` sets the conv compute type (e.g. bfloat16); GDN, the
    activations between layers and the output stay float32."""
    import jax.numpy as jnp
    from jax import nn
    h = x + network.CENTRE["analysis"] if transform == "analysis" else x
    for layer in network.transforms(*widths_of(p))[transform]:
        key = f"{transform}/{layer.name}"
        if layer.kind in ("gdn", "igdn"):
            h = gdn(h, p[f"{key}/reparam_beta"], p[f"{key}/reparam_gamma"], inverse=layer.kind == "igdn")
            continue
        h = h if dtype is None else h.astype(dtype)
        if layer.kind == "conv":
            h = conv(h, p[f"{key}/kernel"], p[f"{key}/bias"], layer.stride)
        else:
            h = deconv(h, p[f"{key}/kernel"], p[f"{key}/bias"])
        h = h.astype(jnp.float32)
        h = nn.relu(h) if layer.relu else h
    return h + network.CENTRE["synthesis"] if transform == "synthesis" else h


def analysis(p: Params, x, dtype=None):
    """Image (0..1, NHWC) -> y at 1/16 resolution."""
    return apply(p, "analysis", x, dtype)


def synthesis(p: Params, y, dtype=None):
    """y_hat -> image (0..1)."""
    return apply(p, "synthesis", y, dtype)


def hyper_analysis(p: Params, y):
    return apply(p, "hyper_analysis", y)


def hyper_synthesis(p: Params, z_hat):
    """z_hat -> (mu, log2 sigma before bounding), concatenated as the Keras layer outputs them."""
    return apply(p, "hyper_synthesis", z_hat)


def split_hyper(h) -> tuple:
    """Hyper-synthesis output -> (mu, sigma), log2 sigma bounded to the scale table's range."""
    import jax.numpy as jnp
    m = h.shape[-1] // 2
    mu, log2_sigma = h[..., :m], h[..., m:]
    log2_sigma = upper_bound(lower_bound(log2_sigma, LOG2_SCALE_MIN), LOG2_SCALE_MAX)
    return mu, jnp.exp2(log2_sigma)


TRANSFORMS: dict[str, Callable] = {"analysis": analysis, "synthesis": synthesis,
                                   "hyper_analysis": hyper_analysis, "hyper_synthesis": hyper_synthesis}
