"""The four transforms of the mean-scale hyperprior, as small named Keras layers.

Plain tf.keras Conv2D/Conv2DTranspose with padding='same' are used instead of
tfc.SignalConv2D: on the 2-core training machine one step was ~0.56 s versus
0.8-1.4 s (see models/README.md). Everything pads to multiples of 64 before the
analysis, so 'same' padding never meets a ragged border.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_compression as tfc

from models import scale_table
from models.synthesis import Y_STRIDE, Z_STRIDE  # noqa: F401 - defined with the decoder's Keras-free synthesis

# The hyper-synthesis predicts log2(sigma), bounded to the scale table's range.
LOG2_SCALE_MIN = scale_table.LOG2_SCALE_MIN
LOG2_SCALE_MAX = scale_table.LOG2_SCALE_MAX


def _conv(filters: int, kernel: int, stride: int, name: str, activation=None) -> tf.keras.layers.Layer:
    return tf.keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                  activation=activation, name=name)


def _deconv(filters: int, kernel: int, stride: int, name: str, activation=None) -> tf.keras.layers.Layer:
    return tf.keras.layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same",
                                           activation=activation, name=name)


class AnalysisTransform(tf.keras.Sequential):
    """Image (0..1) -> latent y at 1/16 resolution (encoder only).

    Centring the input (and the synthesis output) on 0.5 saves the first
    thousand training steps from learning the mean grey level.
    """

    def __init__(self, num_filters: int, latent_channels: int):
        super().__init__(name="analysis")
        self.add(tf.keras.layers.Lambda(lambda x: x - 0.5, name="centre"))
        for i in range(3):
            self.add(_conv(num_filters, 5, 2, f"conv_{i}"))
            self.add(tfc.GDN(name=f"gdn_{i}"))
        self.add(_conv(latent_channels, 5, 2, "conv_3"))


class SynthesisTransform(tf.keras.Sequential):
    """Latent y_hat -> image (0..1). The only float stage the decoder runs, which runs it as
    models.synthesis.Synthesis: the same ops on the same weights, without Keras (tests/test_synthesis.py)."""

    def __init__(self, num_filters: int):
        super().__init__(name="synthesis")
        for i in range(3):
            self.add(_deconv(num_filters, 5, 2, f"deconv_{i}"))
            self.add(tfc.GDN(inverse=True, name=f"igdn_{i}"))
        self.add(_deconv(3, 5, 2, "deconv_3"))
        self.add(tf.keras.layers.Lambda(lambda x: x + 0.5, name="uncentre"))


class HyperAnalysisTransform(tf.keras.Sequential):
    """y -> hyper-latent z at 1/64 resolution (encoder only)."""

    def __init__(self, num_filters: int, hyper_channels: int):
        super().__init__(name="hyper_analysis")
        self.add(_conv(num_filters, 3, 1, "conv_0", "relu"))
        self.add(_conv(num_filters, 5, 2, "conv_1", "relu"))
        self.add(_conv(hyper_channels, 5, 2, "conv_2"))


class HyperSynthesisTransform(tf.keras.Sequential):
    """z_hat -> (mu, log2 sigma) for y.

    Trained in float; exported to the integer network of models/intnet.py, which
    is what encoder and decoder actually run. Keep to the layer kinds intnet
    supports: Conv2DTranspose/Conv2D, 'same' padding, ReLU or linear.
    """

    def __init__(self, num_filters: int, latent_channels: int):
        super().__init__(name="hyper_synthesis")
        self.add(_deconv(num_filters, 5, 2, "deconv_0", "relu"))
        self.add(_deconv(num_filters * 3 // 2, 5, 2, "deconv_1", "relu"))
        self.add(_conv(latent_channels * 2, 3, 1, "conv_2"))
