"""Image quality metrics, defined once so every codec is scored the same way.

Conventions (stated in the report and README, identical to
shared/anchors/kodak_summary.md):

* Y is BT.601 full-range luma computed in float from 8-bit RGB:
  ``Y = 0.299 R + 0.587 G + 0.114 B`` (no rounding, no offset), peak 255.
* PSNR-RGB uses one MSE over all samples of the three channels.
* MS-SSIM is ``tf.image.ssim_multiscale(max_val=255)`` with its default five
  scales and weights. MS-SSIM-RGB is TensorFlow's mean over the three
  per-channel MS-SSIM values. Five scales need both sides >= 176 px
  (11-tap window at the 1/16 scale); smaller images get NaN rather than a
  number computed on fewer scales, so every value in a table means the same.
* MS-SSIM dB = -10 log10(1 - MS-SSIM).
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0
PSNR_CAP_DB = 100.0  # identical images: a finite stand-in for +inf, so JSON/CSV stay numeric
Y_WEIGHTS = (0.299, 0.587, 0.114)
MSSSIM_MIN_SIDE = 176  # 11 * 2**4: smallest side that supports the default 5 scales
Y_DEFINITION = "Y = 0.299 R + 0.587 G + 0.114 B (BT.601 full range, float, peak 255)"


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 full-range luma as float64 HxW; the single definition of Y in this package."""
    x = np.asarray(rgb, dtype=np.float64)
    return Y_WEIGHTS[0] * x[..., 0] + Y_WEIGHTS[1] * x[..., 1] + Y_WEIGHTS[2] * x[..., 2]


def psnr_from_mse(mse: float, peak: float = PEAK, cap: float = PSNR_CAP_DB) -> float:
    """10 log10(peak^2 / MSE) in dB, at most `cap` (cap=math.inf: identical inputs give inf)."""
    mse = float(mse)
    if mse <= 0.0:
        return cap
    return min(cap, 10.0 * math.log10(peak * peak / mse))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = PEAK, cap: float = PSNR_CAP_DB) -> float:
    """PSNR in dB over all samples of a and b (any shape), capped at `cap`.

    The one PSNR of the project: evaluation, conformance (cap=inf, where "identical" must read as
    such), the demo and training all call this or psnr_from_mse.
    """
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return psnr_from_mse(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2), peak, cap)


def psnr_rgb(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR over R, G and B jointly (one MSE), 8-bit peak."""
    return psnr(ref, dist)


def psnr_y(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR of float luma Y (see luma), peak 255."""
    return psnr(luma(ref), luma(dist))


def _ms_ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    h, w = ref.shape[:2]
    if min(h, w) < MSSSIM_MIN_SIDE:
        return float("nan")
    import tensorflow as tf  # lazy: TF import costs seconds and is only needed here

    a = tf.convert_to_tensor(np.asarray(ref, np.float32)[None])
    b = tf.convert_to_tensor(np.asarray(dist, np.float32)[None])
    return float(tf.image.ssim_multiscale(a, b, max_val=PEAK)[0].numpy())


def ms_ssim_y(ref: np.ndarray, dist: np.ndarray) -> float:
    """MS-SSIM of float luma (5 scales); NaN if a side is < MSSSIM_MIN_SIDE."""
    return _ms_ssim(luma(ref)[..., None], luma(dist)[..., None])


def ms_ssim_rgb(ref: np.ndarray, dist: np.ndarray) -> float:
    """Mean over R, G, B of per-channel MS-SSIM (TensorFlow's behaviour for 3 channels)."""
    return _ms_ssim(ref, dist)


def to_db(ms_ssim: float) -> float:
    """-10 log10(1 - MS-SSIM): spreads values near 1 so curves and BD-rates are usable."""
    if ms_ssim != ms_ssim:  # NaN
        return float("nan")
    if ms_ssim >= 1.0:
        return PSNR_CAP_DB
    return -10.0 * math.log10(1.0 - ms_ssim)


def bpp(n_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of a file: 8 * bytes / (W * H)."""
    return 8.0 * n_bytes / (width * height)
