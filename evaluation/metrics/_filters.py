"""Small NumPy filtering helpers shared by the ported metrics (correlation, as torch's conv2d)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def corr1d_valid(x: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """'valid' 1-D correlation of x with taps k along axis."""
    win = sliding_window_view(x, len(k), axis=axis)
    return np.tensordot(win, np.asarray(k, dtype=x.dtype), axes=([-1], [0]))


def sep_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'valid' 2-D correlation with the separable kernel outer(k, k)."""
    return corr1d_valid(corr1d_valid(x, k, 0), k, 1)


def gauss1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian on offsets -size//2+1 .. size//2 (MATLAB fspecial's grid).

    Its outer product is fspecial('gaussian', size, sigma): the 2-D kernel is separable.
    """
    t = np.arange(-size // 2 + 1, size // 2 + 1, dtype=np.float64)
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def corr2d(x: np.ndarray, k: np.ndarray, pad: int = 0, mode: str = "constant") -> np.ndarray:
    """2-D correlation of x with a small dense kernel k after padding by `pad` (np.pad mode)."""
    xp = np.pad(x, pad, mode=mode) if pad else x
    win = sliding_window_view(xp, k.shape)
    return np.einsum("ijkl,kl->ij", win, k.astype(x.dtype), optimize=True)


def lerp_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Linear resampling along axis to n_out samples with aligned corners (torch bilinear,
    align_corners=True): output i samples input position i * (n_in - 1) / (n_out - 1)."""
    n_in = x.shape[axis]
    if n_in == 1 or n_out == 1:
        return np.repeat(np.take(x, [0], axis=axis), n_out, axis=axis)
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
    i0 = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - i0
    shape = [1] * x.ndim
    shape[axis] = n_out
    frac = frac.reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - frac) + np.take(x, i0 + 1, axis=axis) * frac
