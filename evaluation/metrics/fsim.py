"""FSIM-C (feature similarity with chroma) on 10-bit RGB, as the JPEG AI reference's IQA_pytorch FSIM."""

from __future__ import annotations

import math

import numpy as np

from evaluation.metrics._filters import corr2d
from evaluation.metrics.yuv import Planes

N_SCALE, N_ORIENT = 4, 4
MIN_WAVELENGTH, MULT, SIGMA_ONF, D_THETA_ON_SIGMA, K_NOISE, EPSILON = 6, 2, 0.55, 1.2, 2.0, 1e-4
T1, T2, T3, T4, LAMBDA = 0.85, 160.0, 200.0, 200.0, 0.03
SCHARR_X = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16.0
SCHARR_Y = np.array([[3, 10, 3], [0, 0, 0], [-3, -10, -3]]) / 16.0
YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _lowpass(rows: int, cols: int, cutoff: float = 0.45, n: int = 15) -> np.ndarray:
    def axis(m: int) -> np.ndarray:
        return (np.arange(-(m - 1) / 2.0, (m - 1) / 2.0 + 1) / (m - 1)) if m % 2 else np.arange(-m / 2.0, m / 2.0) / m

    x, y = np.meshgrid(axis(cols), axis(rows), sparse=True)
    return np.fft.ifftshift(1.0 / (1.0 + (np.sqrt(x * x + y * y) / cutoff) ** (2.0 * n)))


def _filters(rows: int, cols: int) -> list[list[np.ndarray]]:
    """Log-Gabor filters [orientation][scale] in the frequency domain (origin at the corner)."""
    u1, u2 = np.meshgrid(np.linspace(-0.5, 0.5, cols, endpoint=bool(cols % 2)),
                         np.linspace(-0.5, 0.5, rows, endpoint=bool(rows % 2)), sparse=True)
    radius = np.sqrt(np.fft.ifftshift(u1) ** 2 + np.fft.ifftshift(u2) ** 2)
    radius[0, 0] = 1.0
    lp = _lowpass(rows, cols)
    log_gabor = []
    for s in range(N_SCALE):
        fo = 1.0 / (MIN_WAVELENGTH * MULT ** s)
        lg = np.exp(-(np.log(radius / fo) ** 2) / (2.0 * math.log(SIGMA_ONF) ** 2)) * lp
        lg[0, 0] = 0.0
        log_gabor.append(lg)
    y, x = np.mgrid[0:rows, 0:cols]
    y = (y - math.floor(rows / 2)) / rows
    x = (x - math.floor(cols / 2)) / cols
    theta = np.fft.ifftshift(np.arctan2(-y, x))
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    theta_sigma = math.pi / N_ORIENT / D_THETA_ON_SIGMA
    out = []
    for o in range(N_ORIENT):
        ang = o * math.pi / N_ORIENT
        ds = sin_t * math.cos(ang) - cos_t * math.sin(ang)
        dc = cos_t * math.cos(ang) + sin_t * math.sin(ang)
        spread = np.exp(-np.arctan2(ds, dc) ** 2 / (2 * theta_sigma ** 2))
        out.append([(lg * spread).astype(np.float32).astype(np.float64) for lg in log_gabor])
    return out


def _phase_congruency(im: np.ndarray) -> np.ndarray:
    """Kovesi's phase congruency (phasecong2: 4 scales x 4 orientations, noise threshold k = 2)."""
    rows, cols = im.shape
    spec = np.fft.fft2(im)
    bank = _filters(rows, cols)
    energy_all = np.zeros_like(im)
    an_all = np.zeros_like(im)
    for o in range(N_ORIENT):
        eos = [np.fft.ifft2(spec * f) for f in bank[o]]
        amps = [np.sqrt(eo.real ** 2 + eo.imag ** 2 + 1e-12) for eo in eos]
        sum_e = sum(eo.real for eo in eos)
        sum_o = sum(eo.imag for eo in eos)
        sum_an = sum(amps)
        x_energy = np.sqrt(sum_e ** 2 + sum_o ** 2 + 1e-12) + EPSILON
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        energy = sum(eo.real * mean_e + eo.imag * mean_o - np.abs(eo.real * mean_o - eo.imag * mean_e) for eo in eos)
        sq = (amps[0] ** 2).ravel()
        median = np.partition(sq, (sq.size - 1) // 2)[(sq.size - 1) // 2]  # torch.median: the lower middle
        noise_power = median / -math.log(0.5) / np.sum(bank[o][0] ** 2)
        spatial = [np.real(np.fft.ifft2(f)).astype(np.float32).astype(np.float64) * math.sqrt(rows * cols)
                   for f in bank[o]]
        sum_an2 = sum(float(np.sum(s * s)) for s in spatial)
        sum_aiaj = sum(float(np.sum(spatial[i] * spatial[j])) for i in range(N_SCALE - 1) for j in range(i + 1, N_SCALE))
        tau = math.sqrt((2 * noise_power * sum_an2 + 4 * noise_power * sum_aiaj) / 2 + 1e-12)
        sigma = math.sqrt((2 - math.pi / 2) * tau ** 2 + 1e-12)
        threshold = (tau * math.sqrt(math.pi / 2) + K_NOISE * sigma) / 1.7
        energy_all += np.maximum(energy - threshold, 0)
        an_all += sum_an
    return energy_all / an_all


def _downsample(x: np.ndarray, f: int) -> np.ndarray:
    """f x f box average with stride f ('valid'): FSIM's resize of images larger than ~256 px."""
    if f <= 1:
        return x
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    return x[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def fsim_planes(ref: Planes, dist: Planes) -> float:
    """FSIM-C (Zhang et al. 2011) of RGB in [0, 255] (10-bit RGB x 255).

    RGB -> YIQ; each channel box-downsampled by f = round(min(H, W) / 256) (at least 1); phase
    congruency of Y and Scharr gradient magnitude (zero padding) give the similarity maps
    (T1 = 0.85, T2 = 160), I and Q the chroma terms (T3 = T4 = 200, lambda = 0.03); pooled with the
    maximum phase congruency as weight.
    """
    h, w = ref.rgb.shape[:2]
    f = int(max(1, np.round(min(h, w) / 256)))
    chans = []
    for p in (ref, dist):
        yiq = np.tensordot(p.rgb * 255, YIQ.T, axes=1)
        chans.append([_downsample(yiq[..., c], f) for c in range(3)])
    (y1, i1, q1), (y2, i2, q2) = chans
    pc1, pc2 = _phase_congruency(y1), _phase_congruency(y2)
    g1 = np.sqrt(corr2d(y1, SCHARR_X, 1) ** 2 + corr2d(y1, SCHARR_Y, 1) ** 2 + 1e-12)
    g2 = np.sqrt(corr2d(y2, SCHARR_X, 1) ** 2 + corr2d(y2, SCHARR_Y, 1) ** 2 + 1e-12)
    s_pc = (2 * pc1 * pc2 + T1) / (pc1 ** 2 + pc2 ** 2 + T1)
    s_g = (2 * g1 * g2 + T2) / (g1 ** 2 + g2 ** 2 + T2)
    pcm = np.maximum(pc1, pc2)
    s_i = (2 * i1 * i2 + T3) / (i1 ** 2 + i2 ** 2 + T3)
    s_q = (2 * q1 * q2 + T4) / (q1 ** 2 + q2 ** 2 + T4)
    sim = s_g * s_pc * pcm * np.sign(s_g) * (np.abs(s_i * s_q) + 1e-12) ** LAMBDA
    return float(np.sum(sim) / np.sum(pcm))
