"""Mean-scale hyperprior (Minnen et al. 2018, no context model), training side.

Training uses additive uniform noise for the rate terms. What the synthesis and
hyper-synthesis see is either the noisy latents ('noise', the usual choice from
scratch: at initialisation |y| << 0.5, so rounding would pass almost no signal
to the synthesis) or straight-through rounding ('ste', "mixed" quantisation:
the decoder's inputs are then the same integers it gets at inference; used when
fine-tuning per-target models).
The exported codec (models/weights.py) replaces the hyper-synthesis by an
integer network and the priors by stored CDF tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tensorflow as tf
import tensorflow_compression as tfc

from models import transforms as T


@dataclass(frozen=True)
class Widths:
    """Per-model widths. N: transform filters, M: latent channels (z has N)."""

    num_filters: int = 128
    latent_channels: int = 192

    def as_dict(self) -> dict:
        return asdict(self)


def _ste_round(x: tf.Tensor) -> tf.Tensor:
    return x + tf.stop_gradient(tf.round(x) - x)


class Hyperprior(tf.keras.Model):
    """The full model; `call` returns bpp, MSE (0..255 scale) and MS-SSIM."""

    def __init__(self, widths: Widths, quantization: str = "noise"):
        super().__init__(name="hyperprior")
        if quantization not in ("noise", "ste"):
            raise ValueError(f"quantization must be 'noise' or 'ste', got {quantization!r}")
        self.widths = widths
        self.quantization = quantization
        n, m = widths.num_filters, widths.latent_channels
        self.analysis = T.AnalysisTransform(n, m)
        self.synthesis = T.SynthesisTransform(n)
        self.hyper_analysis = T.HyperAnalysisTransform(n, n)
        self.hyper_synthesis = T.HyperSynthesisTransform(n, m)
        self.z_prior = tfc.NoisyDeepFactorized(batch_shape=(n,))
        self.build((None, None, None, 3))

    def build(self, input_shape):
        x = tf.zeros((1, 64, 64, 3))
        self.call(x, training=False)
        super().build(input_shape)

    def split_hyper(self, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Hyper-synthesis output -> (mu, sigma)."""
        mu, log2_sigma = tf.split(h, 2, axis=-1)
        log2_sigma = tfc.lower_bound(log2_sigma, T.LOG2_SCALE_MIN)
        log2_sigma = tfc.upper_bound(log2_sigma, T.LOG2_SCALE_MAX)
        return mu, tf.pow(2.0, log2_sigma)

    def call(self, x: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        y = self.analysis(x)
        z = self.hyper_analysis(y)
        z_noisy = z + tf.random.uniform(tf.shape(z), -0.5, 0.5)
        ste = self.quantization == "ste" or not training
        z_hat = _ste_round(z) if ste else z_noisy
        mu, sigma = self.split_hyper(self.hyper_synthesis(z_hat))
        y_noisy = y + tf.random.uniform(tf.shape(y), -0.5, 0.5)
        y_hat = mu + _ste_round(y - mu) if ste else y_noisy
        bits_z = -tf.reduce_sum(self.z_prior.log_prob(z_noisy)) / tf.math.log(2.0)
        y_dist = tfc.NoisyNormal(loc=mu, scale=sigma)
        bits_y = -tf.reduce_sum(y_dist.log_prob(y_noisy)) / tf.math.log(2.0)
        x_hat = self.synthesis(y_hat)
        num_pixels = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        bpp = (bits_y + bits_z) / num_pixels
        mse = tf.reduce_mean(tf.math.squared_difference(x * 255.0, x_hat * 255.0))
        return {"bpp": bpp, "bpp_y": bits_y / num_pixels, "bpp_z": bits_z / num_pixels,
                "mse": mse, "x_hat": x_hat}


@dataclass
class LossConfig:
    """'lambda': D + lambda*R.  'guerin': D + beta*((R_t - R)/R_t)^2 (Guerin et al.).

    D is MSE on the 0..255 scale times `mse_weight`, plus `msssim_weight`*(1-MS-SSIM).
    """

    kind: str = "lambda"
    lmbda: float = 0.01
    beta: float | tf.Variable = 1.0          # variables let the auto-rate loop steer a traced step
    target_bpp: float | tf.Variable = 0.5
    mse_weight: float = 1.0
    msssim_weight: float = 0.0

    def loss(self, out: dict[str, tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        d = self.mse_weight * out["mse"]
        if self.msssim_weight:
            ms = tf.reduce_mean(tf.image.ssim_multiscale(x, tf.clip_by_value(out["x_hat"], 0, 1), 1.0))
            d += self.msssim_weight * (1.0 - ms)
        if self.kind == "lambda":
            return out["bpp"] + self.lmbda * d
        if self.kind == "guerin":
            rel = (self.target_bpp - out["bpp"]) / self.target_bpp
            return d + self.beta * tf.square(rel)
        raise ValueError(f"unknown loss kind {self.kind!r}")
