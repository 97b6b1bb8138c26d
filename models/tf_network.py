"""The TensorFlow backend of the network in models/network.py: the CPU training step runs these.

Why TF for training on a CPU: XLA:CPU has no fast convolution, and TF 2.14 runs its
convolutions and their gradients on oneDNN, about 3x the JAX step on the same cores
(training/README.md, "Speed"). The transposed convolution and the GDN pool are the
decoder's own ops (models/synthesis.py); what is added here is the gradient rule of
tfc.lower_bound, which the decoder never needs. Parameters are the same flat dict as
models/jax_transforms.py; tests/test_tf_step.py pins the two backends to each other.
"""

from __future__ import annotations

import numpy as np

from models import network, synthesis


def _tf():
    import tensorflow as tf
    return tf


def lower_bound(x, bound: float):
    """tfc.lower_bound: max(x, bound), with the gradient passed where it pushes x back above the bound."""
    tf = _tf()

    @tf.custom_gradient
    def f(v):
        def grad(g):
            return tf.where((v >= bound) | (g < 0), g, tf.zeros_like(g))
        return tf.maximum(v, tf.cast(bound, v.dtype)), grad
    return f(x)


def upper_bound(x, bound: float):
    return -lower_bound(-x, -bound)


def _gdn_value(v, minimum: float):
    tf = _tf()
    return tf.square(lower_bound(v, float(np.sqrt(minimum + network.GDN_PEDESTAL)))) - network.GDN_PEDESTAL


def gdn(x, reparam_beta, reparam_gamma, inverse: bool = False):
    """tfc.GDN (alpha = epsilon = 1): x / (beta + |x| . gamma), or x * (...) when inverse."""
    tf = _tf()
    norm = synthesis.gdn_norm(tf, x, _gdn_value(reparam_beta, network.GDN_BETA_MIN),
                              _gdn_value(reparam_gamma, 0.0))
    return x * norm if inverse else x / norm


def conv(x, kernel, bias, stride: int = 1):
    """Keras Conv2D(padding='same'), NHWC, kernel (k, k, in, out)."""
    tf = _tf()
    y = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), stride, "SAME")
    return tf.nn.bias_add(y, tf.cast(bias, y.dtype))


def deconv(x, kernel, bias):
    """Keras Conv2DTranspose(5, strides=2, padding='same'), kernel (5, 5, out, in): the decoder's op."""
    tf = _tf()
    return synthesis.deconv(tf, x, kernel=tf.cast(kernel, x.dtype), bias=tf.cast(bias, x.dtype))


def apply(p: dict, transform: str, x, dtype=None):
    """One transform of models/network.py. `dtype` (e.g. tf.bfloat16) sets the conv compute type; GDN, the
    activations between layers and the output stay float32."""
    tf = _tf()
    h = x + network.CENTRE["analysis"] if transform == "analysis" else x
    for layer in network.transforms(*network.widths_of(p))[transform]:
        key = f"{transform}/{layer.name}"
        if layer.kind in ("gdn", "igdn"):
            h = gdn(h, p[f"{key}/reparam_beta"], p[f"{key}/reparam_gamma"], inverse=layer.kind == "igdn")
            continue
        h = h if dtype is None else tf.cast(h, dtype)
        if layer.kind == "conv":
            h = conv(h, p[f"{key}/kernel"], p[f"{key}/bias"], layer.stride)
        else:
            h = deconv(h, p[f"{key}/kernel"], p[f"{key}/bias"])
        h = tf.cast(h, tf.float32)
        h = tf.nn.relu(h) if layer.relu else h
    return h + network.CENTRE["synthesis"] if transform == "synthesis" else h


def split_hyper(h) -> tuple:
    """Hyper-synthesis output -> (mu, sigma), log2 sigma bounded to the scale table's range."""
    tf = _tf()
    m = h.shape[-1] // 2
    mu, log2_sigma = h[..., :m], h[..., m:]
    log2_sigma = upper_bound(lower_bound(log2_sigma, network.LOG2_SCALE_MIN), network.LOG2_SCALE_MAX)
    return mu, tf.pow(2.0, log2_sigma)
