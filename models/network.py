"""The mean-scale hyperprior's architecture, described once: layers, shapes, parameter order.

Both backends build their ops from this description: models/tf_network.py (TensorFlow:
the CPU training step, on oneDNN) and models/jax_transforms.py (JAX: the accelerator
step and the JAX decode backend). The decoder's plain-TF synthesis (models/synthesis.py)
runs the same ops on the synthesis' tensors, and `layout()` is the order of the committed
resume states (w000, w001, ...), which is the retired Keras training model's `weights` order.

Parameters are a flat dict keyed `<transform>/<layer>/<variable>`, holding the tensors as
Keras stores them: conv kernels (k, k, in, out), transposed-conv kernels (k, k, out, in),
tfc.GDN's reparametrised beta and gamma, tfc.DeepFactorized's matrices, biases and factors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from models import scale_table

# tfc.GDNParameter: value = max(v, sqrt(minimum + offset^2))^2 - offset^2, offset = 2^-18.
GDN_PEDESTAL = (2.0 ** -18) ** 2
GDN_BETA_MIN = 1e-6
LOG2_SCALE_MIN = scale_table.LOG2_SCALE_MIN
LOG2_SCALE_MAX = scale_table.LOG2_SCALE_MAX
PRIOR_FILTERS = (3, 3)            # tfc.DeepFactorized default hidden widths
PRIOR_INIT_SCALE = 10.0
TRANSFORMS = ("analysis", "synthesis", "hyper_analysis", "hyper_synthesis")
# The image transforms centre on mid-grey: it saves the first thousand steps learning the mean level.
CENTRE = {"analysis": -0.5, "synthesis": 0.5}


@dataclass(frozen=True)
class Layer:
    """One layer: 'conv' (k x k, stride, 'same'), 'deconv' (5 x 5 stride-2 transposed, 'same'),
    'gdn' or 'igdn' (tfc.GDN, alpha = epsilon = 1); `relu` follows a conv when set."""

    kind: str
    name: str
    cin: int
    cout: int
    kernel: int = 5
    stride: int = 1
    relu: bool = False

    def params(self, prefix: str) -> list[tuple[str, tuple]]:
        """(key, shape) of this layer's tensors, in Keras `weights` order."""
        k, key = self.kernel, f"{prefix}/{self.name}"
        if self.kind == "conv":
            return [(f"{key}/kernel", (k, k, self.cin, self.cout)), (f"{key}/bias", (self.cout,))]
        if self.kind == "deconv":
            return [(f"{key}/kernel", (k, k, self.cout, self.cin)), (f"{key}/bias", (self.cout,))]
        return [(f"{key}/reparam_beta", (self.cout,)), (f"{key}/reparam_gamma", (self.cout, self.cout))]


@functools.cache
def transforms(num_filters: int, latent_channels: int) -> dict[str, list[Layer]]:
    """The four transforms' layers (Minnen et al. 2018, mean-scale hyperprior)."""
    n, m = num_filters, latent_channels
    analysis, synthesis = [], []
    cin = 3
    for i in range(3):
        analysis += [Layer("conv", f"conv_{i}", cin, n, 5, 2), Layer("gdn", f"gdn_{i}", n, n)]
        cin = n
    analysis.append(Layer("conv", "conv_3", n, m, 5, 2))
    cin = m
    for i in range(3):
        synthesis += [Layer("deconv", f"deconv_{i}", cin, n, 5, 2), Layer("igdn", f"igdn_{i}", n, n)]
        cin = n
    synthesis.append(Layer("deconv", "deconv_3", n, 3, 5, 2))
    hyper_analysis = [Layer("conv", "conv_0", m, n, 3, 1, True), Layer("conv", "conv_1", n, n, 5, 2, True),
                      Layer("conv", "conv_2", n, n, 5, 2)]
    hyper_synthesis = [Layer("deconv", "deconv_0", n, n, 5, 2, True),
                       Layer("deconv", "deconv_1", n, n * 3 // 2, 5, 2, True),
                       Layer("conv", "conv_2", n * 3 // 2, 2 * m, 3, 1)]
    return {"analysis": analysis, "synthesis": synthesis, "hyper_analysis": hyper_analysis,
            "hyper_synthesis": hyper_synthesis}


def prior_layout(num_filters: int) -> list[tuple[str, tuple]]:
    """tfc.DeepFactorized's tensors for the N hyper-latent channels, in Keras `weights` order."""
    f = (1,) + PRIOR_FILTERS + (1,)
    nl = len(PRIOR_FILTERS) + 1
    n = num_filters
    return ([(f"z_prior/bias_{i}", (n, f[i + 1], 1)) for i in range(nl)]
            + [(f"z_prior/factor_{i}", (n, f[i + 1], 1)) for i in range(nl - 1)]
            + [(f"z_prior/matrix_{i}", (n, f[i + 1], f[i])) for i in range(nl)])


def layout(num_filters: int, latent_channels: int) -> list[tuple[str, tuple]]:
    """(key, shape) of every tensor, in the committed states' order."""
    out: list[tuple[str, tuple]] = []
    for name, layers in transforms(num_filters, latent_channels).items():
        for layer in layers:
            out += layer.params(name)
    return out + prior_layout(num_filters)


def widths_of(params: dict) -> tuple[int, int]:
    """(N, M) read off the parameter shapes (a decoder-only set has the synthesis alone)."""
    if "analysis/conv_3/kernel" in params:
        k = params["analysis/conv_3/kernel"]
        return int(k.shape[2]), int(k.shape[3])
    k = params["synthesis/deconv_0/kernel"]                  # transposed: (k, k, out = N, in = M)
    return int(k.shape[2]), int(k.shape[3])


def ordered(params: dict) -> list[tuple[str, object]]:
    """(key, tensor) in the committed states' order (a pytree's dict order is sorted, not this)."""
    return [(k, params[k]) for k, _ in layout(*widths_of(params))]


def sub(params: dict, transform: str) -> list:
    """The tensors of one transform, in Keras `weights` order (what the model files store)."""
    return [v for k, v in ordered(params) if k.startswith(transform + "/")]
