"""PSNR-HVS on 10-bit Y through the psnr-hvsm package, as the JPEG AI reference calls it."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from evaluation.metrics.yuv import Planes

BLOCK = 8


def _pad8(x: np.ndarray) -> np.ndarray:
    h, w = x.shape
    return np.pad(x, ((0, -h % BLOCK), (0, -w % BLOCK)), mode="edge")


def psnr_hvs_planes(ref: Planes, dist: Planes) -> float:
    """PSNR-HVS (not -M; Egiazarian et al. 2006) of Y in [0, 1] (10-bit code / 1023).

    psnr_hvsm works on whole 8x8 DCT blocks, so Y is padded by edge replication at the bottom/right
    to a multiple of 8 first, as the reference does; identical inputs give the package's 100 dB.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # its import prints a note about PyTorch
        from psnr_hvsm import psnr_hvs_hvsm  # lazy: a dependency of the evaluation only

    with np.errstate(divide="ignore"):  # identical blocks: the package divides by zero, then picks 100
        p_hvs, _p_hvsm = psnr_hvs_hvsm(_pad8(ref.y01), _pad8(dist.y01))
    return float(p_hvs)
