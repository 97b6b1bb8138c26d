"""VIF (pixel-domain visual information fidelity) on 10-bit Y, as the JPEG AI reference's IQA_pytorch VIFs."""

from __future__ import annotations

import numpy as np

from evaluation.metrics._filters import gauss1d, sep_valid
from evaluation.metrics.yuv import Planes, pad_min

VIF_MIN_SIDE = 64  # the reference zero-pads Y to this
SIGMA_NSQ = 2.0
EPS = 1e-10


def vif_planes(ref: Planes, dist: Planes) -> float:
    """VIF-P (Sheikh & Bovik 2006) of Y in [0, 255] (10-bit codes / 1023 * 255), zero-padded to >= 64 px.

    Four scales with Gaussian windows of N = 17, 9, 5, 3 taps (sigma N/5), each scale after the
    first low-passed with its window and decimated by 2, all filtering 'valid'; the score is the
    sum over scales and pixels of log10(1 + g^2 s1^2 / (sv^2 + 2)) over that of log10(1 + s1^2 / 2)
    (sigma_n^2 = 2), with the reference's clamps of negative variances and gains.
    """
    x = pad_min(ref.y01, VIF_MIN_SIDE) * 255
    y = pad_min(dist.y01, VIF_MIN_SIDE) * 255
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = gauss1d(n, n / 5.0)
        if scale > 1:
            x = sep_valid(x, win)[::2, ::2]
            y = sep_valid(y, win)[::2, ::2]
        mu1, mu2 = sep_valid(x, win), sep_valid(y, win)
        s1 = np.maximum(sep_valid(x * x, win) - mu1 * mu1, 0)
        s2 = np.maximum(sep_valid(y * y, win) - mu2 * mu2, 0)
        s12 = sep_valid(x * y, win) - mu1 * mu2
        g = s12 / (s1 + EPS)
        sv = s2 - g * s12
        s1 = np.maximum(s1 - EPS, 0)
        quiet = s2 < EPS
        g[quiet] = 0
        sv[quiet] = 0
        neg = g < 0
        sv[neg] = s2[neg]
        g = np.maximum(g, 0)
        sv = np.where(sv < EPS, EPS, sv)
        num += float(np.sum(np.log10(g * g * s1 / (sv + SIGMA_NSQ) + 1)))
        den += float(np.sum(np.log10(s1 / SIGMA_NSQ + 1)))
    return num / (den + 1e-12)
