"""NLPD (normalised Laplacian pyramid distance) on 10-bit Y, as the JPEG AI reference's IQA_pytorch NLPD."""

from __future__ import annotations

import numpy as np

from evaluation.metrics._filters import corr2d, lerp_axis, sep_valid
from evaluation.metrics.yuv import Planes, pad_min

NLPD_MIN_SIDE = 128  # the reference zero-pads Y to this
LEVELS = 6
LP_TAPS = np.array([0.05, 0.25, 0.4, 0.25, 0.05])  # outer(LP_TAPS, LP_TAPS) is the 5x5 pyramid filter
SIGMAS = (0.0248, 0.0185, 0.0179, 0.0191, 0.0220, 0.2782)
# divisive-normalisation neighbour weights per level: (up, left, right, down)
DN = ((0.1011, 0.1493, 0.1460, 0.1015), (0.0757, 0.1986, 0.1846, 0.0837), (0.0477, 0.2138, 0.2243, 0.0467),
      (0.0, 0.2503, 0.2616, 0.0), (0.0, 0.2598, 0.2552, 0.0), (0.0, 0.2215, 0.0717, 0.0))


def _dn_kernel(level: int) -> np.ndarray:
    up, left, right, down = DN[level]
    return np.array([[0, up, 0], [left, 0, right], [0, down, 0]])


def _pyramid(im: np.ndarray) -> list[np.ndarray]:
    """Normalised Laplacian pyramid: per level the band-pass residual divided by sigma plus a
    weighted sum of its neighbours' magnitudes."""
    out = []
    j = im
    for level in range(LEVELS):
        low = sep_valid(np.pad(j, 2, mode="reflect"), LP_TAPS)[::2, ::2]
        h, w = low.shape
        up = lerp_axis(lerp_axis(low, 2 * h, 0), 2 * w, 1)
        up = sep_valid(np.pad(up, 2, mode="reflect"), LP_TAPS)
        if up.shape != j.shape:  # odd size: torch's default 'nearest' resize back to J's size
            ri = np.floor(np.arange(j.shape[0]) * (up.shape[0] / j.shape[0])).astype(int)
            ci = np.floor(np.arange(j.shape[1]) * (up.shape[1] / j.shape[1])).astype(int)
            up = up[ri][:, ci]
        band = j - up
        norm = corr2d(np.abs(band), _dn_kernel(level), 1, mode="reflect")
        out.append(band / (SIGMAS[level] + norm))
        j = low
    return out


def nlpd_planes(ref: Planes, dist: Planes) -> float:
    """NLPD (Laparra et al. 2016) of Y in [0, 1], zero-padded to >= 128 px; lower is better.

    Six levels of a Laplacian pyramid (5x5 binomial-like filter, reflect padding, stride-2
    decimation, bilinear x2 expansion with aligned corners), each band divisively normalised; the
    distance is the mean over levels of the RMS difference of the normalised bands.
    """
    a = _pyramid(pad_min(ref.y01, NLPD_MIN_SIDE))
    b = _pyramid(pad_min(dist.y01, NLPD_MIN_SIDE))
    return float(np.mean([np.sqrt(np.mean((za - zb) ** 2)) for za, zb in zip(a, b)]))
