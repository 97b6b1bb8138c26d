"""Per-image latent refinement: stochastic Gumbel annealing on y and z at the chosen quantiser step.

Why: g_a is amortised over a training set, so for any one image its y is not the
best latent the decoder could be sent. A few dozen gradient steps on y, through
the decoder's own synthesis (models.synthesis.Synthesis, the same ops and
weights) and the Gaussian rate of the fixed hyperprior, find latents that cost
about the same bits and decode closer to the image. It is encoder-side only:
the stream is an ordinary v2 stream and the decoder cannot tell.

- z is refined with y. The hyper-synthesis the decoder runs is an integer
  network with no gradient, so the optimisation goes through its float
  surrogate (FloatHyperSynthesis: the same layers with the integer weights
  scaled back, within 0.02 of the integer mu and log2 sigma), and z's rate is
  read off the model's own z CDF table. The result is rounded, and the encoder
  then runs the integer network on it, codes z, and codes y against the mu and
  scale indexes the decoder will see. At 0.06 bpp z is 11-15 % of the stream,
  and refining it as well doubled the gain there (CHANGELOG.md).
- Rounding is relaxed by stochastic Gumbel annealing (Yang, Bamler & Mandt,
  "Improving Inference for Neural Image Compression", NeurIPS 2020): each
  latent is a Gumbel-softmax mix of its floor and ceiling whose temperature
  falls towards hard rounding. Straight-through rounding was measured first and
  gains little (CHANGELOG.md).
- The trade-off lambda is the image's own: the slope of its distortion-rate
  curve between the chosen delta code and DELTA_PROBE codes coarser, so the
  refined latents stay near the rate the search chose.
- Every CHECK_EVERY steps the hard-rounded latents are scored: distortion on the
  tile's pixels, rate as y's Gaussian bits plus z's table bits. The checkpoint
  with the lowest distortion + lambda * rate within the tile's share of the rate
  budget wins, and the unrefined latents are a candidate, so a tile never gets
  worse by its own measure. Rate control then
  codes the whole image for real and keeps the refinement only if the stream is
  inside the band, under the search's ceiling, and costs less MSE + lambda * bpp.
- Large images are refined in tiles of TILE_LATENTS with a fixed context of
  HALO_LATENTS (as the tiled synthesis), so memory is bounded at any size. A
  tile owns the z under its core; z around it is context, and later tiles see
  the earlier ones' refined y and z.

The gradient steps run the synthesis's transposed convolutions in bfloat16 where the CPU
computes it natively and oneDNN is on (TF_ENABLE_ONEDNN_OPTS=0 turns both off): about 1.6x
faster at the same gain (docs/findings.md); the checkpoints are scored in float32.

v3 streams are not refined: their slice nets are integer networks of the
decoded latents, which gives no gradient.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

from models import scale_table as S
from models.coding import CdfTable
from models.intnet import BAND_HALO, FloatHyperSynthesis, IntHyperSynthesis
from models.synthesis import Y_STRIDE, Z_STRIDE

DEFAULT_ITERS = 100        # python -m encoder --refine: steps per tile (0 = off)
LEARNING_RATE = 0.005      # Adam, on y in its own units
TAU_START, TAU_MIN, TAU_DECAY = 0.5, 0.02, 3.0   # tau = max(TAU_START * exp(-TAU_DECAY * t), TAU_MIN), t: 0 -> 1
CHECK_EVERY = 10
DELTA_PROBE = 6            # codes coarser than the chosen one, for the image's own lambda
TILE_LATENTS = 48          # 768 px: a Kodak image is one tile
HALO_LATENTS = 6           # context around a tile (fixed), as models.synthesis
MARGIN_LATENTS = 3         # distortion is scored this far beyond a tile's own latents
Z_PER_Y = Z_STRIDE // Y_STRIDE   # 4: one z latent per 4 x 4 y latents


def add_refine_option(parser: argparse.ArgumentParser, default: int = DEFAULT_ITERS, note: str = "") -> None:
    """`--refine STEPS`, declared once for every tool that encodes (encoder, evaluation, evaluation.package,
    conformance); `note` says what the tool does with it."""
    from models.cli import non_negative_int
    parser.add_argument("--refine", type=non_negative_int, default=default, metavar="STEPS",
                        help="latent-refinement steps per tile after the rate search (encoder/refine.py); kept only "
                             "when the stream stays in the band and costs less MSE + lambda * bpp; 0 = off, the "
                             f"fast mode (default: %(default)s{'; ' + note if note else ''})")


@dataclass
class Refined:
    """What refinement did to one image at one delta code (reported by the encoder CLI)."""

    y: np.ndarray
    z: np.ndarray          # refined z, rounded (float32 integers; the encoder clamps and codes them)
    iters: int             # steps run per tile
    lam: float             # MSE (0..255) per bit per pixel
    tiles: int
    improved_tiles: int
    bits_change: float     # estimated y + z bits, refined minus original (whole image)


def resolve_dtype(name: str | None = "auto") -> str | None:
    """The gradient steps' convolution dtype: "auto" is bfloat16 where the CPU has it natively and oneDNN
    runs (emulated bf16 is slower than float32), else float32 (None)."""
    if name == "auto":
        from models.cpu import native_bf16, onednn_on
        return "bfloat16" if native_bf16() and onednn_on() else None
    return None if name in (None, "float32") else name


def tau_at(step: int, iters: int) -> float:
    """Annealing temperature at a step: from TAU_START down to TAU_MIN over the run."""
    return max(TAU_START * math.exp(-TAU_DECAY * step / max(iters - 1, 1)), TAU_MIN)


def tiles(h: int, w: int, tile: int = TILE_LATENTS) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) cores covering an h x w latent grid."""
    return [(ty, min(ty + tile, h), tx, min(tx + tile, w)) for ty in range(0, h, tile) for tx in range(0, w, tile)]


def refine_latents(synthesis, hyper: IntHyperSynthesis, z_table: CdfTable, rgb: np.ndarray, y: np.ndarray,
                   z: np.ndarray, delta_code: int, lam: float, bit_budget: float, iters: int = DEFAULT_ITERS,
                   seed: int = 0, compute_dtype: str | None = "auto") -> Refined:
    """Refined y and z (same shapes; z rounded) for this delta code. `z` is h_a's output before rounding;
    `bit_budget` is how many estimated bits the whole image may gain (shared between tiles by area;
    0 means no tile may add bits); `compute_dtype`: resolve_dtype's."""
    tf = _tf()
    compute_dtype = resolve_dtype(compute_dtype)
    h, w = y.shape[:2]
    height, width = rgb.shape[:2]
    delta = np.float32(S.delta(delta_code))
    hs = FloatHyperSynthesis(tf, hyper)
    zbits = _ZBits(tf, z_table, z.shape[-1])
    z = z.astype(np.float32)
    y_out, start = y.copy(), np.round(z)       # start: the z the search coded, refined tile by tile
    cores = tiles(h, w, TILE_LATENTS)          # read at call time, so a test can use small tiles
    improved, change = 0, 0.0
    for n, (cy0, cy1, cx0, cx1) in enumerate(cores):
        share = bit_budget * (cy1 - cy0) * (cx1 - cx0) / (h * w)
        t = _Tile(tf, synthesis, hs, zbits, rgb, y_out, z, start, delta, (cy0, cy1, cx0, cx1),
                  (height, width), lam, compute_dtype)
        best, gained = t.run(iters, share, seed=(seed, n))
        if best is not None:
            (ys, yv), (zs, zv) = best
            y_out[ys], start[zs] = yv, zv
            improved += 1
            change += gained
    return Refined(y_out, start, iters, lam, len(cores), improved, change)


class _ZBits:
    """z's rate from the model's own CDF table: bits of each integer, per channel; beyond a row's
    regular range, the escape bin's bits plus a payload estimate."""

    def __init__(self, tf, table: CdfTable, channels: int):
        heads = np.concatenate([[0], np.cumsum(table.length.astype(np.int64) + 2)[:-1]])
        width = int(table.length[:channels].max()) + 1        # one more column for "beyond the range"
        bits = np.zeros((channels, width), np.float32)
        for c in range(channels):
            n = int(table.length[c])
            cdf = table.cdf[heads[c] + 1:heads[c] + 2 + n].astype(np.float64)
            b = -np.log2(np.maximum(np.diff(cdf) / 2.0 ** table.cdf[heads[c]], 2.0 ** -table.cdf[heads[c]]))
            bits[c, :n - 1] = b[:n - 1]
            bits[c, n - 1:] = b[n - 1] + 8.0                  # escape bin + about 8 payload bits
        self.tf, self.width = tf, width
        self.bits = tf.constant(bits.reshape(-1))
        self.lo = tf.constant(table.offset[:channels].astype(np.float32))
        self.hi = tf.constant((table.offset[:channels] + table.length[:channels] - 2).astype(np.float32))
        self.row = tf.constant(np.arange(channels, dtype=np.int32) * width)

    def __call__(self, v):
        """Bits of integer-valued v (..., channels), elementwise."""
        tf = self.tf
        col = tf.where(v > self.hi, tf.cast(self.width - 1, tf.float32),
                       tf.clip_by_value(v - self.lo, 0.0, tf.cast(self.width - 2, tf.float32)))
        return tf.gather(self.bits, self.row + tf.cast(col, tf.int32))


class _Tile:
    """One core of y latents and the z under it, optimised with their context fixed; scored on
    the pixels the core reaches."""

    def __init__(self, tf, synthesis, hs, zbits, rgb, y, z, start, delta, core, size, lam, compute_dtype=None):
        h, w = y.shape[:2]
        zh, zw = z.shape[:2]
        height, width = size
        cy0, cy1, cx0, cx1 = core
        wy0, wy1 = max(cy0 - HALO_LATENTS, 0), min(cy1 + HALO_LATENTS, h)
        wx0, wx1 = max(cx0 - HALO_LATENTS, 0), min(cx1 + HALO_LATENTS, w)
        self.core = (slice(cy0 - wy0, cy1 - wy0), slice(cx0 - wx0, cx1 - wx0))
        self.core_abs = (slice(cy0, cy1), slice(cx0, cx1))
        win = (slice(wy0, wy1), slice(wx0, wx1))
        # z: the core's own (cores are multiples of 4 latents, or end at the image's edge), and enough
        # context that mu and sigma over the y window are what the whole image's z would give.
        r = BAND_HALO
        zc = (cy0 // Z_PER_Y, -(-cy1 // Z_PER_Y), cx0 // Z_PER_Y, -(-cx1 // Z_PER_Y))
        zy0, zy1 = max(wy0 // Z_PER_Y - r, 0), min(-(-wy1 // Z_PER_Y) + r, zh)
        zx0, zx1 = max(wx0 // Z_PER_Y - r, 0), min(-(-wx1 // Z_PER_Y) + r, zw)
        self.z_core = (slice(zc[0] - zy0, zc[1] - zy0), slice(zc[2] - zx0, zc[3] - zx0))
        self.z_core_abs = (slice(zc[0], zc[1]), slice(zc[2], zc[3]))
        self.y_in_z = (slice(wy0 - zy0 * Z_PER_Y, wy1 - zy0 * Z_PER_Y), slice(wx0 - zx0 * Z_PER_Y, wx1 - zx0 * Z_PER_Y))
        # Pixels scored: the core's own, plus MARGIN_LATENTS around it, inside the image.
        py0, py1 = max(cy0 - MARGIN_LATENTS, 0) * Y_STRIDE, min(cy1 + MARGIN_LATENTS, h) * Y_STRIDE
        px0, px1 = max(cx0 - MARGIN_LATENTS, 0) * Y_STRIDE, min(cx1 + MARGIN_LATENTS, w) * Y_STRIDE
        py1, px1 = min(py1, height), min(px1, width)
        oy, ox = py0 - wy0 * Y_STRIDE, px0 - wx0 * Y_STRIDE
        self.pix = (slice(oy, oy + py1 - py0), slice(ox, ox + px1 - px0))
        self.npix = (py1 - py0) * (px1 - px0)
        self.tf, self.synthesis, self.hs, self.zbits, self.lam, self.delta = tf, synthesis, hs, zbits, lam, delta
        self.dtype = None if compute_dtype is None else tf.dtypes.as_dtype(compute_dtype)
        self.x = tf.constant(rgb[py0:py1, px0:px1].astype(np.float32) / np.float32(255.0))
        mask = np.zeros((wy1 - wy0, wx1 - wx0, 1), np.float32)
        mask[self.core] = 1
        self.mask = tf.constant(mask)
        zmask = np.zeros((zy1 - zy0, zx1 - zx0, 1), np.float32)
        zmask[self.z_core] = 1
        self.zmask = tf.constant(zmask)
        zwin = (slice(zy0, zy1), slice(zx0, zx1))
        self.y0 = y[win].copy()
        # The core's z starts where h_a put it (SGA needs the fractional part); its context is fixed,
        # at the rounded values that will be coded (earlier tiles' refined z included).
        z_init = start[zwin].copy()
        z_init[self.z_core] = z[zwin][self.z_core]
        self.z_start = start[zwin].copy()
        self.y_var, self.z_var = tf.Variable(self.y0), tf.Variable(z_init)
        self.opt = tf.keras.optimizers.Adam(LEARNING_RATE)
        self._step = tf.function(self._step_fn)
        self._score = tf.function(self._score_fn)

    def run(self, iters: int, bit_share: float, seed: tuple[int, int]):
        """((y core slice, values), (z core slice, values)) of the best checkpoint, or None if none beats
        the latents the search coded; and the change in estimated bits."""
        tf = self.tf
        d0, r0 = (float(v) for v in self._score(self.y_var, tf.constant(self.z_start)))
        best, best_j, best_gain = None, self._cost(d0, r0), 0.0
        for i in range(iters):
            # Stateless noise, seeded by (seed, tile, step): the same image encodes to the same stream.
            self._step(tf.constant(tau_at(i, iters), tf.float32), tf.constant([seed[0] * 65536 + seed[1], i], tf.int64))
            if (i + 1) % CHECK_EVERY == 0 or i == iters - 1:
                z_hard = tf.round(self.z_var)
                d, r = (float(v) for v in self._score(self.y_var, z_hard))
                j = self._cost(d, r)
                if j < best_j and r - r0 <= bit_share:
                    best = ((self.core_abs, self.y_var.numpy()[self.core]),
                            (self.z_core_abs, z_hard.numpy()[self.z_core]))
                    best_j, best_gain = j, r - r0
        return best, best_gain

    def _cost(self, distortion: float, bits: float) -> float:
        """D + lambda R, lambda being per bit per pixel: the tile's bits over the pixels it scores."""
        return distortion + self.lam * bits / self.npix

    def _mu_sigma(self, z):
        mu, log2_sigma = self.hs(z[None])
        mu, log2_sigma = mu[0][self.y_in_z], log2_sigma[0][self.y_in_z]
        return mu, self.tf.pow(2.0, log2_sigma) / self.delta          # sigma in units of delta

    def _bits(self, s, sigma, z_soft_bits):
        """Gaussian bits of y symbols s (units of delta) in their [s - 1/2, s + 1/2] bins, core only,
        plus z's bits (core only)."""
        tf = self.tf
        k = np.float32(1 / math.sqrt(2))
        p = 0.5 * (tf.math.erfc(-(s + 0.5) / sigma * k) - tf.math.erfc(-(s - 0.5) / sigma * k))
        y_bits = tf.reduce_sum(-tf.math.log(tf.maximum(p, 1e-9)) * self.mask) / np.float32(math.log(2))
        return y_bits + tf.reduce_sum(z_soft_bits * self.zmask)

    def _distortion(self, y_hat, dtype=None):
        """MSE (0..255) on the scored pixels of the synthesis of y_hat (its convolutions in `dtype`)."""
        tf = self.tf
        x_hat = self.synthesis(y_hat[None], dtype)[0]
        err = x_hat[self.pix[0], self.pix[1]] - self.x
        return tf.reduce_sum(tf.square(err)) * np.float32(255.0 ** 2 / (3 * self.npix))

    def _soft(self, v, tau, seed):
        """Stochastic Gumbel annealing of v: a mix of floor(v) and floor(v) + 1 (value, and the two weights)."""
        tf = self.tf
        f = tf.stop_gradient(tf.floor(v))
        eps = np.float32(1e-5)
        logits = tf.stack([-tf.atanh(tf.clip_by_value(v - f, eps - 1, 1 - eps)),
                           -tf.atanh(tf.clip_by_value(f + 1 - v, eps - 1, 1 - eps))], -1) / tau
        u = tf.random.stateless_uniform(tf.shape(logits), seed, 1e-9, 1.0)
        wts = tf.nn.softmax(logits - tf.math.log(-tf.math.log(u)), -1)
        return f + wts[..., 1], f, wts

    def _step_fn(self, tau, noise_seed):
        tf = self.tf
        with tf.GradientTape() as tape:
            z_soft, zf, zw = self._soft(self.z_var, tau, noise_seed + tf.constant([0, 1 << 20], tf.int64))
            mu, sigma = self._mu_sigma(z_soft)
            s_soft, _, _ = self._soft((self.y_var - mu) / self.delta, tau, noise_seed)
            z_bits = zw[..., 0] * self.zbits(zf) + zw[..., 1] * self.zbits(zf + 1)
            loss = (self._distortion(s_soft * self.delta + mu, self.dtype)
                    + self.lam * self._bits(s_soft, sigma, z_bits) / np.float32(self.npix))
        gy, gz = tape.gradient(loss, [self.y_var, self.z_var])
        self.opt.apply_gradients([(gy * self.mask, self.y_var), (gz * self.zmask, self.z_var)])

    def _score_fn(self, y_var, z_hard):
        mu, sigma = self._mu_sigma(z_hard)
        s = self.tf.round((y_var - mu) / self.delta)
        return self._distortion(s * self.delta + mu), self._bits(s, sigma, self.zbits(z_hard))


def _tf():
    from models.runtime import import_tensorflow
    return import_tensorflow()
