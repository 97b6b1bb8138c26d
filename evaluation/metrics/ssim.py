"""MS-SSIM and IW-SSIM on 10-bit Y, as the JPEG AI reference software defines them."""

from __future__ import annotations

import numpy as np

from evaluation.metrics._filters import corr2d, gauss1d, lerp_axis, sep_valid
from evaluation.metrics.yuv import PEAK10, Planes, pad_min

MS_SSIM_MIN_SIDE = 164   # the reference zero-pads Y to this before pytorch_msssim
IW_SSIM_MIN_SIDE = 256   # ... and to this before IW-SSIM
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
IW_WEIGHTS = MS_WEIGHTS
IW_SCALES = 5
IW_SIGMA_NSQ = 0.4
IW_TOL = 1e-15


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 mean with stride 2; an odd side is zero-padded by one sample at both ends first, zeros
    counted (torch avg_pool2d(2, padding=side % 2), as pytorch_msssim downsamples)."""
    ph, pw = x.shape[0] % 2, x.shape[1] % 2
    xp = np.pad(x, ((ph, ph), (pw, pw)))
    h, w = (x.shape[0] + 2 * ph) // 2, (x.shape[1] + 2 * pw) // 2
    return xp[:2 * h, :2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))


def ms_ssim_planes(ref: Planes, dist: Planes) -> float:
    """MS-SSIM of 10-bit Y codes with data range 1023, as the reference's pytorch_msssim call.

    Y is zero-padded to >= 164 px; five scales of SSIM with an 11-tap Gaussian window (sigma 1.5,
    'valid'), K = (0.01, 0.03); contrast-structure means at the four finer scales and the full SSIM
    mean at the coarsest, each clamped at 0, combined with the weights of Wang et al. 2003. Between
    scales: pytorch_msssim's 2x2 average pooling. (tf.image.ssim_multiscale pads odd sides
    differently and moves the score by up to ~5e-3 on odd-sized images, hence this port.)
    """
    x = pad_min(ref.yuv[0], MS_SSIM_MIN_SIDE)
    y = pad_min(dist.yuv[0], MS_SSIM_MIN_SIDE)
    win = gauss1d(11, 1.5)
    c1, c2 = (0.01 * PEAK10) ** 2, (0.03 * PEAK10) ** 2
    score = 1.0
    for level, weight in enumerate(MS_WEIGHTS):
        mu1, mu2 = sep_valid(x, win), sep_valid(y, win)
        s1 = sep_valid(x * x, win) - mu1 * mu1
        s2 = sep_valid(y * y, win) - mu2 * mu2
        s12 = sep_valid(x * y, win) - mu1 * mu2
        cs = (2 * s12 + c2) / (s1 + s2 + c2)
        if level < len(MS_WEIGHTS) - 1:
            term = float(np.mean(cs))
            x, y = _avg_pool2(x), _avg_pool2(y)
        else:
            term = float(np.mean((2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs))
        score *= max(term, 0.0) ** weight
    return score


def _laplacian(img: np.ndarray) -> list[np.ndarray]:
    """The five bands of pyrtools' LaplacianPyramid(height=5) (binom5, reflect1), finest first."""
    import pyrtools as pt  # lazy: pulls in matplotlib

    lp = pt.pyramids.LaplacianPyramid(img, height=IW_SCALES)
    return [np.asarray(lp.pyr_coeffs[(s, 0)], dtype=np.float64) for s in range(IW_SCALES)]


def _enlarge2(im: np.ndarray) -> np.ndarray:
    """Parent band upsampled 2x (IW-SSIM's imenlarge2): bilinear to 4M-3 with aligned corners,
    linear extrapolation by one sample on each side, then every other sample."""
    m, n = im.shape
    t1 = lerp_axis(lerp_axis(im, 4 * m - 3, 0), 4 * n - 3, 1)
    t2 = np.zeros((4 * m - 1, 4 * n - 1))
    t2[1:-1, 1:-1] = t1
    t2[0, :] = 2 * t2[1, :] - t2[2, :]
    t2[-1, :] = 2 * t2[-2, :] - t2[-3, :]
    t2[:, 0] = 2 * t2[:, 1] - t2[:, 2]
    t2[:, -1] = 2 * t2[:, -2] - t2[:, -3]
    return t2[::2, ::2]


def _info_weight(o: np.ndarray, d: np.ndarray, parent: np.ndarray | None) -> np.ndarray:
    """Information-content weight map of one band (GSM model, 3x3 neighbourhood + parent)."""
    box = np.full((3, 3), 1.0 / 9.0)
    mx, my = corr2d(o, box, 1), corr2d(d, box, 1)
    cov = corr2d(o * d, box, 1) - mx * my
    ssx = np.maximum(corr2d(o * o, box, 1) - mx * mx, 0)
    ssy = np.maximum(corr2d(d * d, box, 1) - my * my, 0)
    g = cov / (ssx + IW_TOL)
    vv = ssy - g * cov
    low_x = ssx < IW_TOL
    g[low_x] = 0
    vv[low_x] = ssy[low_x]
    low_y = ssy < IW_TOL
    g[low_y] = 0
    vv[low_y] = 0
    # the reference stores bands in a float32 buffer before building the neighbourhood vectors
    o32 = o.astype(np.float32).astype(np.float64)
    nv, nh = o.shape
    bv, bh = nv - 2, nh - 2
    cols = [o32[1 - dy:1 - dy + bv, 1 - dx:1 - dx + bh].ravel() for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    if parent is not None:
        p32 = parent[:nv, :nh].astype(np.float32).astype(np.float64)
        cols.append(p32[1:1 + bv, 1:1 + bh].ravel())
    y = np.stack(cols, axis=1)
    n = y.shape[1]
    cu = y.T @ y / y.shape[0]
    ev, h = np.linalg.eigh(cu)
    pos = np.where(ev > 0, ev, 0.0)
    spos = pos.sum()
    cu = (h * (pos * ev.sum() / (spos + (spos == 0)))) @ h.T
    ss = (np.sum((y @ np.linalg.inv(cu)) * y, axis=1) / n).reshape(bv, bh)
    g, vv = g[1:1 + bv, 1:1 + bh], vv[1:1 + bv, 1:1 + bh]
    s2 = IW_SIGMA_NSQ * IW_SIGMA_NSQ
    base = (vv + (1 + g * g) * IW_SIGMA_NSQ) * ss
    infow = np.zeros_like(g)
    for lam in ev:
        infow += np.log2(1 + (base * lam + IW_SIGMA_NSQ * vv) / s2)
    infow[infow < IW_TOL] = 0
    return infow


def iw_ssim_planes(ref: Planes, dist: Planes) -> float:
    """IW-SSIM (Wang & Li 2011) of Y scaled to [0, 255], as the reference's IW_SSIM_PyTorch.

    Y (zero-padded to >= 256 px) is split into a 5-level Laplacian pyramid; per band an SSIM
    contrast-structure map (11-tap Gaussian, sigma 1.5, L = 255, 'valid') is pooled with the
    information-content weights of a Gaussian-scale-mixture model (3x3 neighbours plus the upsampled
    parent band, sigma_n^2 = 0.4); the coarsest band adds luminance and is pooled by mean; the score
    is the product of the five pooled values to the MS-SSIM weights.
    """
    a = (pad_min(ref.y01, IW_SSIM_MIN_SIDE) * 255).astype(np.float32)
    b = (pad_min(dist.y01, IW_SSIM_MIN_SIDE) * 255).astype(np.float32)
    po, pd = _laplacian(a), _laplacian(b)
    win = gauss1d(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    score = 1.0
    for s in range(IW_SCALES):
        o, d = po[s], pd[s]
        mu1, mu2 = sep_valid(o, win), sep_valid(d, win)
        s12 = sep_valid(o * d, win) - mu1 * mu2
        s1 = np.maximum(sep_valid(o * o, win) - mu1 * mu1, 0)
        s2 = np.maximum(sep_valid(d * d, win) - mu2 * mu2, 0)
        cs = (2 * s12 + c2) / (s1 + s2 + c2)
        if s == IW_SCALES - 1:
            cs = cs * (2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1)
            pooled = float(np.mean(cs))
        else:
            parent = _enlarge2(po[s + 1]) if s < IW_SCALES - 2 else None
            iw = _info_weight(o, d, parent)[4:-4, 4:-4]
            pooled = float(np.sum(cs * iw) / np.sum(iw))
        score *= abs(pooled) ** IW_WEIGHTS[s]
    return score
