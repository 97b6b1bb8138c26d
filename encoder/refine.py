"""Per-image latent refinement: stochastic Gumbel annealing on y at the chosen quantiser step.

Why: g_a is amortised over a training set, so for any one image its y is not the
best latent the decoder could be sent. A few dozen gradient steps on y, through
the decoder's own synthesis (models.synthesis.Synthesis, the same ops and
weights) and the Gaussian rate of the fixed hyperprior, find latents that cost
about the same bits and decode closer to the image. It is encoder-side only:
the stream is an ordinary v2 stream and the decoder cannot tell.

- z, and so mu_q and the scale indexes, stay fixed: the hyper-synthesis is an
  integer network with no gradient, and the z bytes are already coded.
- Rounding is relaxed by stochastic Gumbel annealing (Yang, Bamler & Mandt,
  "Improving Inference for Neural Image Compression", NeurIPS 2020): each
  latent is a Gumbel-softmax mix of its floor and ceiling whose temperature
  falls towards hard rounding. Straight-through rounding was measured first and
  gains little (CHANGELOG, sessions 5 and 8).
- The trade-off lambda is the image's own: the slope of its distortion-rate
  curve between the chosen delta code and DELTA_PROBE codes coarser, so the
  refined latents stay near the rate the search chose.
- Every CHECK_EVERY steps the hard-rounded latents are scored: distortion on the
  tile's pixels, rate as the table's Gaussian bits. The best checkpoint within
  the tile's share of the rate budget wins, and the unrefined latents are a
  candidate, so a tile never gets worse by its own measure. Rate control then
  codes the whole image for real and keeps the refinement only if the stream is
  inside the band, under the search's ceiling, and decodes closer to the image.
- Large images are refined in tiles of TILE_LATENTS with a fixed context of
  HALO_LATENTS (as the tiled synthesis), so memory is bounded at any size.

v3 streams are not refined: their slice nets are integer networks of the
decoded latents, which gives no gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models import scale_table as S
from models.synthesis import Y_STRIDE

DEFAULT_ITERS = 100        # python -m encoder --refine: steps per tile (0 = off)
LEARNING_RATE = 0.005      # Adam, on y in its own units
TAU_START, TAU_MIN, TAU_DECAY = 0.5, 0.02, 3.0   # tau = max(TAU_START * exp(-TAU_DECAY * t), TAU_MIN), t: 0 -> 1
CHECK_EVERY = 10
DELTA_PROBE = 6            # codes coarser than the chosen one, for the image's own lambda
TILE_LATENTS = 48          # 768 px: a Kodak image is one tile
HALO_LATENTS = 6           # context around a tile (fixed), as models.synthesis
MARGIN_LATENTS = 3         # distortion is scored this far beyond a tile's own latents


@dataclass
class Refined:
    """What refinement did to one image at one delta code (reported by the encoder CLI)."""

    y: np.ndarray
    iters: int             # steps run per tile
    lam: float             # MSE (0..255) per bit per pixel
    tiles: int
    improved_tiles: int
    bits_change: float     # estimated y bits, refined minus original (whole image)


def tau_at(step: int, iters: int) -> float:
    """Annealing temperature at a step: from TAU_START down to TAU_MIN over the run."""
    return max(TAU_START * math.exp(-TAU_DECAY * step / max(iters - 1, 1)), TAU_MIN)


def tiles(h: int, w: int, tile: int = TILE_LATENTS) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) cores covering an h x w latent grid."""
    return [(ty, min(ty + tile, h), tx, min(tx + tile, w)) for ty in range(0, h, tile) for tx in range(0, w, tile)]


def refine_latents(synthesis, rgb: np.ndarray, y: np.ndarray, mu_q: np.ndarray, log2_sigma_q: np.ndarray,
                   delta_code: int, lam: float, bit_budget: float, iters: int = DEFAULT_ITERS,
                   seed: int = 0) -> Refined:
    """Refined y (same shape) for this delta code; `bit_budget` is how many estimated bits the whole
    image may gain (shared between tiles by area; 0 means no tile may add bits)."""
    tf = _tf()
    h, w = y.shape[:2]
    height, width = rgb.shape[:2]
    mu = mu_q.astype(np.float32) / np.float32(1 << S.Q)
    sigma = S.sigmas()[S.scale_index(log2_sigma_q, delta_code)].astype(np.float32)   # in units of delta
    delta = np.float32(S.delta(delta_code))
    out = y.copy()
    cores = tiles(h, w, TILE_LATENTS)          # read at call time, so a test can use small tiles
    improved, change = 0, 0.0
    for n, (cy0, cy1, cx0, cx1) in enumerate(cores):
        share = bit_budget * (cy1 - cy0) * (cx1 - cx0) / (h * w)
        t = _Tile(tf, synthesis, rgb, out, mu, sigma, delta, (cy0, cy1, cx0, cx1), (height, width), lam)
        best_y, gained = t.run(iters, share, seed=(seed, n))
        if best_y is not None:
            out[cy0:cy1, cx0:cx1] = best_y
            improved += 1
            change += gained
    return Refined(out, iters, lam, len(cores), improved, change)


class _Tile:
    """One core of latents, optimised with its halo fixed; scored on the pixels it reaches."""

    def __init__(self, tf, synthesis, rgb, y, mu, sigma, delta, core, size, lam):
        h, w = y.shape[:2]
        height, width = size
        cy0, cy1, cx0, cx1 = core
        wy0, wy1 = max(cy0 - HALO_LATENTS, 0), min(cy1 + HALO_LATENTS, h)
        wx0, wx1 = max(cx0 - HALO_LATENTS, 0), min(cx1 + HALO_LATENTS, w)
        self.core = (slice(cy0 - wy0, cy1 - wy0), slice(cx0 - wx0, cx1 - wx0))
        win = (slice(wy0, wy1), slice(wx0, wx1))
        # Pixels scored: the core's own, plus MARGIN_LATENTS around it, inside the image.
        py0, py1 = max(cy0 - MARGIN_LATENTS, 0) * Y_STRIDE, min(cy1 + MARGIN_LATENTS, h) * Y_STRIDE
        px0, px1 = max(cx0 - MARGIN_LATENTS, 0) * Y_STRIDE, min(cx1 + MARGIN_LATENTS, w) * Y_STRIDE
        py1, px1 = min(py1, height), min(px1, width)
        oy, ox = py0 - wy0 * Y_STRIDE, px0 - wx0 * Y_STRIDE
        self.pix = (slice(oy, oy + py1 - py0), slice(ox, ox + px1 - px0))
        self.npix = (py1 - py0) * (px1 - px0)
        self.total_pixels = height * width
        self.tf, self.synthesis, self.lam, self.delta = tf, synthesis, lam, delta
        self.x = tf.constant(rgb[py0:py1, px0:px1].astype(np.float32) / np.float32(255.0))
        mask = np.zeros((wy1 - wy0, wx1 - wx0, 1), np.float32)
        mask[self.core] = 1
        self.mask = tf.constant(mask)
        self.mu, self.sigma = tf.constant(mu[win]), tf.constant(sigma[win])
        self.y0 = y[win].copy()
        self.var = tf.Variable(self.y0)
        self.opt = tf.keras.optimizers.Adam(LEARNING_RATE)
        self._step = tf.function(self._step_fn)
        self._score = tf.function(self._score_fn)

    def run(self, iters: int, bit_share: float, seed: tuple[int, int]) -> tuple[np.ndarray | None, float]:
        """The best core latents (None if no checkpoint beats the start) and their change in bits."""
        tf = self.tf
        d0, r0 = (float(v) for v in self._score(self.var))
        best, best_d, best_gain = None, d0, 0.0
        for i in range(iters):
            # Stateless noise, seeded by (seed, tile, step): the same image encodes to the same stream.
            self._step(tf.constant(tau_at(i, iters), tf.float32), tf.constant([seed[0] * 65536 + seed[1], i], tf.int64))
            if (i + 1) % CHECK_EVERY == 0 or i == iters - 1:
                d, r = (float(v) for v in self._score(self.var))
                if d < best_d and r - r0 <= bit_share:
                    best, best_d, best_gain = self.var.numpy()[self.core], d, r - r0
        return best, best_gain

    def _bits(self, s):
        """Gaussian bits of symbols s (units of delta), each in its [s - 1/2, s + 1/2] bin, core only."""
        tf = self.tf
        k = np.float32(1 / math.sqrt(2))
        p = 0.5 * (tf.math.erfc(-(s + 0.5) / self.sigma * k) - tf.math.erfc(-(s - 0.5) / self.sigma * k))
        return tf.reduce_sum(-tf.math.log(tf.maximum(p, 1e-9)) * self.mask) / np.float32(math.log(2))

    def _distortion(self, s):
        """MSE (0..255) on the scored pixels, of the synthesis of y_hat = s * delta + mu."""
        tf = self.tf
        x_hat = self.synthesis((s * self.delta + self.mu)[None])[0]
        err = x_hat[self.pix[0], self.pix[1]] - self.x
        return tf.reduce_sum(tf.square(err)) * np.float32(255.0 ** 2 / (3 * self.npix))

    def _step_fn(self, tau, noise_seed):
        tf = self.tf
        with tf.GradientTape() as tape:
            s = (self.var - self.mu) / self.delta
            f = tf.stop_gradient(tf.floor(s))
            eps = np.float32(1e-5)
            logits = tf.stack([-tf.atanh(tf.clip_by_value(s - f, eps - 1, 1 - eps)),
                               -tf.atanh(tf.clip_by_value(f + 1 - s, eps - 1, 1 - eps))], -1) / tau
            u = tf.random.stateless_uniform(tf.shape(logits), noise_seed, 1e-9, 1.0)
            w = tf.nn.softmax(logits - tf.math.log(-tf.math.log(u)), -1)
            s_soft = f + w[..., 1]
            # lambda is per bit per image pixel: scale the tile's bits to its share of the image.
            loss = self._distortion(s_soft) + self.lam * self._bits(s_soft) / np.float32(self.npix)
        grad = tape.gradient(loss, self.var) * self.mask
        self.opt.apply_gradients([(grad, self.var)])

    def _score_fn(self, var):
        s = self.tf.round((var - self.mu) / self.delta)
        return self._distortion(s), self._bits(s)


def _tf():
    from models.runtime import import_tensorflow
    return import_tensorflow()
