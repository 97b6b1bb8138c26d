"""The synthesis transform as plain TensorFlow ops: what the decoder runs.

`Synthesis` computes exactly what models.transforms.SynthesisTransform (Keras
Conv2DTranspose + tfc.GDN(inverse=True) layers) computes, op for op, on the same
weights in the same order, without Keras or tensorflow_compression. Building the
Keras model costs a decoder process about 1.3 s and tracing it another 1.2 s;
this costs a few milliseconds. tests/test_synthesis.py checks
the two bit for bit (float32 outputs, graph and eager), and the golden streams
check the decoded PNGs byte for byte.

This module imports neither Keras nor tfc, and TensorFlow only when a model is built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

# y is 16x smaller than the image, z 64x: images are padded to this multiple.
Y_STRIDE = 16
Z_STRIDE = 64

# Synthesis runs on tiles of this many latents (1024 px) with a halo wide enough
# that tiles join without seams (tests/test_codec.py checks max |diff| <= 1).
TILE_LATENTS = 64
HALO_LATENTS = 6

KERNEL = 5
STAGES = 4                                   # three deconv + inverse GDN stages, then a deconv to RGB
# tfc.GDNParameter: value = max(v, sqrt(minimum + offset^2))^2 - offset^2, offset = 2^-18.
GDN_OFFSET = 2.0 ** -18
GDN_BETA_MIN = 1e-6
GDN_GAMMA_MIN = 0.0


def weight_shapes(num_filters: int, latent_channels: int) -> list[tuple[int, ...]]:
    """Shapes in SynthesisTransform.get_weights() order: per stage the transposed kernel
    (k, k, out, in) and bias, then (three first stages) the inverse GDN's reparametrised beta and gamma."""
    n, out = num_filters, []
    cin = latent_channels
    for i in range(STAGES):
        cout = 3 if i == STAGES - 1 else n
        out += [(KERNEL, KERNEL, cout, cin), (cout,)]
        if i < STAGES - 1:
            out += [(n,), (n, n)]
        cin = cout
    return out


class Synthesis:
    """Latent y_hat (1, h, w, M) -> image (1, 16h, 16w, 3), 0..1. Call it eagerly or inside tf.function.

    Weights live in tf.Variables, as in the Keras layers, so a traced function reads
    them the same way and `set_weights` (conformance/checks/parity.py) takes effect.
    """

    def __init__(self, weights: list[np.ndarray], num_filters: int, latent_channels: int):
        import tensorflow as tf
        self.shapes = weight_shapes(num_filters, latent_channels)
        self._check(weights)
        self.variables = [tf.Variable(np.asarray(w, np.float32), trainable=False, name=f"syn{i:03d}")
                          for i, w in enumerate(weights)]

    def _check(self, weights) -> None:
        got = [tuple(np.shape(w)) for w in weights]
        if got != self.shapes:
            raise ValueError(f"synthesis weights have shapes {got}, expected {self.shapes}")

    def get_weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.variables]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self._check(weights)
        for v, w in zip(self.variables, weights):
            v.assign(np.asarray(w, np.float32))

    def steps(self, dtype=None) -> list[tuple[str, str, tuple[int, ...], Callable]]:
        """(name, kind, weight shape, fn) per step, named as SynthesisTransform's layers (profiling).
        `dtype` (e.g. tf.bfloat16) runs the transposed convolutions in it, the inverse GDN and what passes
        between steps staying float32: the encoder's refinement steps use it; the decoder never does."""
        import tensorflow as tf
        out, vs = [], list(self.variables)
        for i in range(STAGES):
            (kernel, bias), vs = vs[:2], vs[2:]
            fn = functools.partial(deconv, tf, kernel=kernel, bias=bias)
            if dtype is not None:
                fn = functools.partial(_deconv_in, tf, dtype, kernel, bias)
            out.append((f"deconv_{i}", "deconv", tuple(kernel.shape), fn))
            if i < STAGES - 1:
                (beta, gamma), vs = vs[:2], vs[2:]
                out.append((f"igdn_{i}", "igdn", tuple(gamma.shape),
                            functools.partial(inverse_gdn, tf, reparam_beta=beta, reparam_gamma=gamma)))
        out.append(("uncentre", "add", (), lambda x: x + 0.5))
        return out

    def __call__(self, y, dtype=None):
        for _, _, _, fn in self.steps(dtype):
            y = fn(y)
        return y


def deconv(tf, x, *, kernel, bias):
    """keras Conv2DTranspose(filters, 5, strides=2, padding='same'): the same ops it runs."""
    shape = tf.shape(x)
    out = tf.stack([shape[0], shape[1] * 2, shape[2] * 2, kernel.shape[2]])
    y = tf.compat.v1.nn.conv2d_transpose(x, kernel, out, (1, 2, 2, 1), padding="SAME", data_format="NHWC")
    return tf.nn.bias_add(y, bias, data_format="NHWC")


def _deconv_in(tf, dtype, kernel, bias, x):
    """deconv computed in `dtype`, float32 in and out."""
    y = deconv(tf, tf.cast(x, dtype), kernel=tf.cast(kernel, dtype), bias=tf.cast(bias, dtype))
    return tf.cast(y, tf.float32)


def gdn_value(tf, variable, minimum: float):
    """tfc.GDNParameter.__call__: lower_bound's forward is tf.maximum."""
    pedestal = tf.constant(GDN_OFFSET ** 2, dtype=variable.dtype)
    bound = tf.constant((minimum + GDN_OFFSET ** 2) ** .5, dtype=variable.dtype)
    return tf.math.square(tf.math.maximum(variable, bound)) - pedestal


def gdn_norm(tf, x, beta, gamma):
    """tfc.GDN's normalisation pool with alpha = epsilon = 1, channels last: beta + |x| . gamma."""
    norm = tf.nn.convolution(abs(x), tf.reshape(gamma, [1, 1] + gamma.shape.as_list()), padding="VALID")
    return tf.nn.bias_add(norm, beta)


def inverse_gdn(tf, x, *, reparam_beta, reparam_gamma):
    """tfc.GDN(inverse=True): x * (beta + |x| . gamma)."""
    beta = gdn_value(tf, reparam_beta, GDN_BETA_MIN)
    gamma = gdn_value(tf, reparam_gamma, GDN_GAMMA_MIN)
    return x * gdn_norm(tf, x, beta, gamma)


# -- y_hat -> image, shared by the decoder and the encoder's reconstruction ------------------------------

def _synth_fn(synthesis):
    """The synthesis as a function of a numpy y_hat, run eagerly: it is plain TF ops (models.synthesis),
    so there is no Keras model to build and no graph to trace (~0.2 s of CPU per
    process saved). Eager and traced runs of these ops give the same float32 output bit for bit
    (tests/test_synthesis.py), as the Keras model's tf.function did (golden streams: same PNG bytes)."""
    if getattr(synthesis, "backend", "tf") == "jax":
        return synthesis                       # decoder/jax_synthesis.JaxSynthesis: numpy in, numpy out
    import tensorflow as tf
    return lambda y: synthesis(tf.convert_to_tensor(y, tf.float32))


def synthesize(synthesis, y_hat: np.ndarray, tile: int = TILE_LATENTS, halo: int = HALO_LATENTS) -> np.ndarray:
    """y_hat (h, w, M) -> image (16h, 16w, 3) float in 0..1, tiled so memory is bounded."""
    fn = _synth_fn(synthesis)
    h, w, _ = y_hat.shape
    if h <= tile + halo and w <= tile + halo:
        return np.asarray(fn(y_hat[None])[0])
    out = np.empty((h * Y_STRIDE, w * Y_STRIDE, 3), np.float32)
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            y0, x0 = max(ty - halo, 0), max(tx - halo, 0)
            y1, x1 = min(ty + tile + halo, h), min(tx + tile + halo, w)
            part = np.asarray(fn(y_hat[None, y0:y1, x0:x1])[0])
            oy, ox = (ty - y0) * Y_STRIDE, (tx - x0) * Y_STRIDE
            th, tw = (min(ty + tile, h) - ty) * Y_STRIDE, (min(tx + tile, w) - tx) * Y_STRIDE
            out[ty * Y_STRIDE:ty * Y_STRIDE + th, tx * Y_STRIDE:tx * Y_STRIDE + tw] = part[oy:oy + th, ox:ox + tw]
    return out


def to_uint8(x: np.ndarray, width: int, height: int, band: int = 256) -> np.ndarray:
    """Crop and round to 8 bits, in row bands so no full-size float temporaries exist (-1 GB at 8K)."""
    x = x[:height, :width]
    out = np.empty(x.shape, np.uint8)
    for r in range(0, x.shape[0], band):
        b = np.nan_to_num(x[r:r + band], nan=0.0, posinf=1.0, neginf=0.0)
        out[r:r + band] = np.clip(np.round(b * 255.0), 0, 255)
    return out
