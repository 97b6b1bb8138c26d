"""Image quality metrics, defined once so every codec is scored the same way.

Two sets live here.

The JPEG AI common-test-conditions set (psnr_y, psnr_u, psnr_v, ms_ssim, iw_ssim, vif, fsim, nlpd,
psnr_hvs, vmaf) follows the JPEG AI reference software (src/codec/metrics/metrics.py): 8-bit RGB
goes to 10-bit BT.709 full-range YUV 4:4:4 (evaluation/metrics/yuv.py) and each metric reads the
planes, range and padding the reference gives it. IW-SSIM, VIF, FSIM and NLPD exist upstream only in
PyTorch; they (and MS-SSIM, after pytorch_msssim) are NumPy ports here, checked against the
reference implementations by tests/test_metrics.py (fixtures made by
tests/fixtures/metrics/make_reference.py). The JPEG AI summary is the BD-rate mean over MEAN7.

The project's earlier set (psnr_rgb, psnr_y_bt601, msssim_y, msssim_rgb) keeps these conventions,
identical to shared/anchors/kodak_summary.md:

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
from collections.abc import Callable

import numpy as np

from evaluation.metrics.fsim import fsim_planes
from evaluation.metrics.hvs import psnr_hvs_planes
from evaluation.metrics.nlpd import nlpd_planes
from evaluation.metrics.ssim import iw_ssim_planes, ms_ssim_planes
from evaluation.metrics.vif import vif_planes
from evaluation.metrics.vmaf import vmaf_planes
from evaluation.metrics.yuv import PEAK10, Planes, check_pair, to_planes

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


def psnr_y_bt601(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR of float BT.601 luma Y (see luma), peak 255: the project's earlier PSNR-Y column."""
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


msssim_y = ms_ssim_y


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


# ------------------------------------------------------------------ JPEG AI set

# name -> (function of the two images' Planes, higher is better)
JPEG_AI: dict[str, tuple[Callable[[Planes, Planes], float], bool]] = {}
# the seven metrics whose BD-rates JPEG AI averages
MEAN7 = ("ms_ssim", "fsim", "vif", "vmaf", "psnr_hvs", "iw_ssim", "nlpd")


def _psnr_plane(i: int) -> Callable[[Planes, Planes], float]:
    def f(ref: Planes, dist: Planes) -> float:
        return psnr_from_mse(np.mean((ref.yuv[i] - dist.yuv[i]) ** 2), PEAK10)

    return f


JPEG_AI.update({
    "psnr_y": (_psnr_plane(0), True), "psnr_u": (_psnr_plane(1), True), "psnr_v": (_psnr_plane(2), True),
    "ms_ssim": (ms_ssim_planes, True), "iw_ssim": (iw_ssim_planes, True), "vif": (vif_planes, True),
    "fsim": (fsim_planes, True), "nlpd": (nlpd_planes, False), "psnr_hvs": (psnr_hvs_planes, True),
    "vmaf": (vmaf_planes, True),
})
JPEG_AI_NAMES = tuple(JPEG_AI)


def _one(name: str, ref: np.ndarray, dist: np.ndarray) -> float:
    check_pair(ref, dist)
    return JPEG_AI[name][0](to_planes(ref), to_planes(dist))


def psnr_y(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR of 10-bit BT.709 Y codes (yuv.to_planes), peak 1023, capped at PSNR_CAP_DB."""
    return _one("psnr_y", ref, dist)


def psnr_u(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR of 10-bit full-range U = (B - Y)/1.8556 + 0.5 codes, peak 1023."""
    return _one("psnr_u", ref, dist)


def psnr_v(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR of 10-bit full-range V = (R - Y)/1.5748 + 0.5 codes, peak 1023."""
    return _one("psnr_v", ref, dist)


def ms_ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    """MS-SSIM of 10-bit Y, data range 1023 (see ssim.ms_ssim_planes)."""
    return _one("ms_ssim", ref, dist)


def iw_ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    """IW-SSIM of 10-bit Y scaled to [0, 255] (see ssim.iw_ssim_planes)."""
    return _one("iw_ssim", ref, dist)


def vif(ref: np.ndarray, dist: np.ndarray) -> float:
    """Pixel-domain VIF of 10-bit Y (see vif.vif_planes)."""
    return _one("vif", ref, dist)


def fsim(ref: np.ndarray, dist: np.ndarray) -> float:
    """FSIM-C of 10-bit RGB (see fsim.fsim_planes)."""
    return _one("fsim", ref, dist)


def nlpd(ref: np.ndarray, dist: np.ndarray) -> float:
    """NLPD of 10-bit Y in [0, 1], lower is better (see nlpd.nlpd_planes)."""
    return _one("nlpd", ref, dist)


def psnr_hvs(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR-HVS of 10-bit Y in [0, 1], padded to a multiple of 8 (see hvs.psnr_hvs_planes)."""
    return _one("psnr_hvs", ref, dist)


def vmaf(ref: np.ndarray, dist: np.ndarray) -> float:
    """VMAF of 10-bit BT.709 full-range YUV 4:4:4 via ffmpeg's libvmaf (see vmaf.vmaf_planes)."""
    return _one("vmaf", ref, dist)


def jpeg_ai(ref: np.ndarray, dist: np.ndarray, names: tuple[str, ...] = JPEG_AI_NAMES,
            timings: dict[str, float] | None = None) -> dict[str, float]:
    """Every JPEG AI metric in `names` of dist against ref (8-bit RGB), colour-converting once.

    With `timings`, the seconds each metric took are stored there under its name.
    """
    import time

    check_pair(ref, dist)
    t0 = time.perf_counter()
    a, b = to_planes(ref), to_planes(dist)
    if timings is not None:
        timings["to_planes"] = time.perf_counter() - t0
    out = {}
    for name in names:
        t0 = time.perf_counter()
        out[name] = JPEG_AI[name][0](a, b)
        if timings is not None:
            timings[name] = time.perf_counter() - t0
    return out
