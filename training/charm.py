"""Bitstream v3 training graph: channel-wise autoregressive entropy model (Minnen & Singh 2020, "CHARM").

y (M channels) is split into `num_slices` slices of S = M / num_slices channels. Slice i is coded
with a Gaussian whose mu and log2 sigma are the hyper-synthesis output for its channels plus a
correction from a small conv net (3 x conv3x3, ReLU) that sees those hyper outputs and every
already decoded slice y_hat_0 .. y_hat_{i-1}. Optional latent residual prediction (LRP) adds a
clipped correction clip(lrp(support, y_hat_i), -1/2, 1/2) to y_hat_i, as the paper does with
0.5*tanh; a clip because the codec runs it as an integer network (models/charm.py), where tanh
is not exact.

Why corrections to the hyper output, with the last layer initialised at zero: a v3 model that
starts from a trained mean-scale base (models/checkpoints/base.npz) starts at exactly the base's
loss and rate (tests/test_charm.py checks it), so no step is spent relearning g_a, g_s, h_a, h_s.

Parameters: the base's flat dict (models/jax_transforms.py) plus `charm/slice_<i>/<net>/conv_<j>/
{kernel,bias}` with net 'cc' (mu, log2 sigma) and optionally 'lrp'. The slice layout is read off
the parameter shapes, so `forward` needs no configuration. With no `charm/` keys, `forward` is
the mean-scale model (v2), which is how the v2-against-v3 experiment (training/v3_experiment.py)
evaluates both on one code path.
"""

from __future__ import annotations

import numpy as np

from models import jax_transforms as J
from models import scale_table as S

PREFIX = "charm/"
KERNEL = 3
LRP_BOUND = 0.5


# -- parameter layout ------------------------------------------------------------------------------------

def support_channels(i: int, slice_depth: int, max_support: int) -> int:
    """Input channels of slice i's nets: its hyper mu and log2 sigma, plus the decoded slices it sees."""
    seen = i if max_support < 0 else min(i, max_support)
    return 2 * slice_depth + seen * slice_depth


def layout(latent_channels: int, num_slices: int, hidden: int, lrp: bool = False,
           max_support: int = -1) -> list[tuple[str, tuple]]:
    """(key, shape) of every slice-network tensor, slice by slice."""
    if latent_channels % num_slices:
        raise ValueError(f"M = {latent_channels} does not split into {num_slices} equal slices")
    s = latent_channels // num_slices
    out: list[tuple[str, tuple]] = []
    for i in range(num_slices):
        cin = support_channels(i, s, max_support)
        nets = [("cc", cin, 2 * s)] + ([("lrp", cin + s, s)] if lrp else [])
        for net, c0, cout in nets:
            widths = [c0, hidden, hidden, cout]
            for j in range(3):
                key = f"{PREFIX}slice_{i}/{net}/conv_{j}"
                out += [(f"{key}/kernel", (KERNEL, KERNEL, widths[j], widths[j + 1])), (f"{key}/bias", (widths[j + 1],))]
    return out


def init(key, latent_channels: int, num_slices: int, hidden: int, lrp: bool = False,
         max_support: int = -1) -> J.Params:
    """Glorot-uniform kernels, zero biases, and a zero last layer (the model starts as its base)."""
    import jax
    import jax.numpy as jnp
    items = layout(latent_channels, num_slices, hidden, lrp, max_support)
    keys = jax.random.split(key, len(items))
    p: J.Params = {}
    for (name, shape), k in zip(items, keys):
        if name.endswith("/bias") or "/conv_2/" in name:
            p[name] = jnp.zeros(shape, jnp.float32)
        else:
            kh, kw, a, b = shape
            lim = np.sqrt(6.0 / (kh * kw * (a + b)))
            p[name] = jax.random.uniform(k, shape, jnp.float32, -lim, lim)
    return p


def spec_of(params: J.Params) -> dict:
    """{'num_slices', 'slice_depth', 'hidden', 'lrp', 'max_support'} read off the shapes; num_slices 0 = v2."""
    n = sum(1 for k in params if k.startswith(PREFIX) and k.endswith("/cc/conv_0/kernel"))
    if not n:
        return {"num_slices": 0, "slice_depth": 0, "hidden": 0, "lrp": False, "max_support": -1}
    _, m = J.widths_of(params)
    s = m // n
    hidden = int(params[f"{PREFIX}slice_0/cc/conv_0/kernel"].shape[-1])
    last_in = int(params[f"{PREFIX}slice_{n - 1}/cc/conv_0/kernel"].shape[2])
    seen = last_in // s - 2
    return {"num_slices": n, "slice_depth": s, "hidden": hidden, "lrp": f"{PREFIX}slice_0/lrp/conv_0/kernel" in params,
            "max_support": -1 if seen == n - 1 else seen}


def net_layers(params: J.Params, i: int, net: str = "cc") -> list[tuple[str, np.ndarray, np.ndarray, bool]]:
    """(kind, kernel, bias, relu) per layer of one slice network, as models/charm.from_float takes them."""
    key = f"{PREFIX}slice_{i}/{net}"
    return [("conv", np.asarray(params[f"{key}/conv_{j}/kernel"]), np.asarray(params[f"{key}/conv_{j}/bias"]), j < 2)
            for j in range(3)]


def to_int(params: J.Params):
    """Quantise the slice networks (models/charm.from_float per net): the v3 model file's IntCharm."""
    from models import charm as MC
    spec = spec_of(params)
    if not spec["num_slices"]:
        raise ValueError("these parameters have no slice networks (a v2 model)")
    n = spec["num_slices"]
    cc = [MC.from_float(net_layers(params, i, "cc")) for i in range(n)]
    lrp = [MC.from_float(net_layers(params, i, "lrp")) for i in range(n)] if spec["lrp"] else None
    return MC.IntCharm(n, spec["slice_depth"], spec["max_support"], cc, lrp)


# -- the graph -------------------------------------------------------------------------------------------

def slice_net(p: J.Params, i: int, net: str, x):
    import jax.nn as nn
    key = f"{PREFIX}slice_{i}/{net}"
    h = nn.relu(J.conv(x, p[f"{key}/conv_0/kernel"], p[f"{key}/conv_0/bias"]))
    h = nn.relu(J.conv(h, p[f"{key}/conv_1/kernel"], p[f"{key}/conv_1/bias"]))
    return J.conv(h, p[f"{key}/conv_2/kernel"], p[f"{key}/conv_2/bias"])


def _bound_log2(v):
    return J.upper_bound(J.lower_bound(v, S.LOG2_SCALE_MIN), S.LOG2_SCALE_MAX)


def slice_params(p: J.Params, i: int, mu_h, ls_h, decoded: list, spec: dict):
    """(mu, bounded log2 sigma) of slice i from its hyper outputs and the decoded slices it sees."""
    import jax.numpy as jnp
    s = spec["slice_depth"]
    seen = decoded if spec["max_support"] < 0 else decoded[:spec["max_support"]]
    o = slice_net(p, i, "cc", jnp.concatenate([mu_h, ls_h] + seen, axis=-1))
    return mu_h + o[..., :s], _bound_log2(ls_h + o[..., s:])


def entropy(p: J.Params, y, key=None, quantization: str = "noise", delta=1.0):
    """(bits of y, bits of z, y_hat) for latents y: the hyperprior and the slice loop, without the transforms g_a, g_s.

    key=None evaluates: z_hat = round(z), s = round((y - mu)/delta), y_hat = mu + s*delta, and the
    rates are the discrete likelihoods of z_hat and s (s under N(0, sigma/delta), as the codec's scale
    index codes it). Training (key given): noisy latents for the rates; the decoded slices the next
    slices see are noisy ('noise') or straight-through rounded ('ste'), as g_s sees them.
    """
    import jax
    import jax.numpy as jnp

    from training.model import LN2, _ste_round, y_log_prob, z_log_prob
    spec = spec_of(p)
    z = J.hyper_analysis(p, y)
    m = y.shape[-1]
    if key is None:
        z_hat = z_r = jnp.round(z)
    else:
        kz, ky = jax.random.split(key)
        z_r = z + jax.random.uniform(kz, z.shape, z.dtype, -0.5, 0.5)
        z_hat = _ste_round(z) if quantization == "ste" else z_r
        noise = jax.random.uniform(ky, y.shape, y.dtype, -0.5, 0.5)
    h = J.hyper_synthesis(p, z_hat)
    mu_h, ls_h = h[..., :m], _bound_log2(h[..., m:])
    n = max(1, spec["num_slices"])
    s = m // n
    decoded, bits_y = [], 0.0
    log2_delta = jnp.log2(jnp.asarray(delta, jnp.float32))
    for i in range(n):
        sl = slice(i * s, (i + 1) * s)
        if spec["num_slices"]:
            mu, ls = slice_params(p, i, mu_h[..., sl], ls_h[..., sl], decoded, spec)
        else:
            mu, ls = mu_h, ls_h
        yi = y[..., sl]
        if key is None:
            sym = jnp.round((yi - mu) / delta)
            y_hat = mu + sym * delta
            ls_d = jnp.clip(ls - log2_delta, S.LOG2_SCALE_MIN, S.LOG2_SCALE_MAX)
            bits_y = bits_y - jnp.sum(y_log_prob(sym, 0.0, jnp.exp2(ls_d))) / LN2
        else:
            y_noisy = yi + noise[..., sl]
            y_hat = mu + _ste_round(yi - mu) if quantization == "ste" else y_noisy
            bits_y = bits_y - jnp.sum(y_log_prob(y_noisy, mu, jnp.exp2(ls))) / LN2
        if spec["lrp"]:
            seen = decoded if spec["max_support"] < 0 else decoded[:spec["max_support"]]
            r = slice_net(p, i, "lrp", jnp.concatenate([mu_h[..., sl], ls_h[..., sl]] + seen + [y_hat], axis=-1))
            y_hat = y_hat + jnp.clip(r, -LRP_BOUND, LRP_BOUND)
        decoded.append(y_hat)
    bits_z = -jnp.sum(z_log_prob(p, z_r)) / LN2
    return bits_y, bits_z, jnp.concatenate(decoded, axis=-1)


def forward(p: J.Params, x, key=None, quantization: str = "noise", dtype=None, delta=1.0) -> dict:
    """x (NHWC, 0..1) -> bpp, bpp_y, bpp_z, mse (0..255), x_hat; the contract of training.model.forward."""
    import jax.numpy as jnp
    bits_y, bits_z, y_hat = entropy(p, J.analysis(p, x, dtype), key, quantization, delta)
    x_hat = J.synthesis(p, y_hat, dtype)
    num_pixels = x.shape[0] * x.shape[1] * x.shape[2]
    mse = jnp.mean(jnp.square(x * 255.0 - x_hat * 255.0))
    return {"bpp": (bits_y + bits_z) / num_pixels, "bpp_y": bits_y / num_pixels, "bpp_z": bits_z / num_pixels,
            "mse": mse, "x_hat": x_hat}


def kmac_per_pixel(latent_channels: int, num_slices: int, hidden: int, lrp: bool = False,
                   max_support: int = -1) -> float:
    """Multiply-accumulates of the slice networks per image pixel (one y position is 16 x 16 pixels)."""
    macs = sum(int(np.prod(shape)) for k, shape in layout(latent_channels, num_slices, hidden, lrp, max_support)
               if k.endswith("/kernel"))
    return macs / 256 / 1000


def with_slices(base: J.Params, key, num_slices: int, hidden: int, lrp: bool = False,
                max_support: int = -1) -> J.Params:
    """A v3 parameter set that starts as `base` (its slice nets output zero)."""
    _, m = J.widths_of(base)
    out = {k: np.asarray(v) for k, v in base.items()}
    out.update({k: np.asarray(v) for k, v in init(key, m, num_slices, hidden, lrp, max_support).items()})
    return out


def ensure_slices(params: J.Params, cfg) -> J.Params:
    """The parameters as a v3 model: unchanged if they have slice nets, else the config's nets added at zero."""
    import jax
    if spec_of(params)["num_slices"]:
        return params
    return with_slices(params, jax.random.PRNGKey(cfg.seed), cfg.charm_slices, cfg.charm_hidden, cfg.charm_lrp)
