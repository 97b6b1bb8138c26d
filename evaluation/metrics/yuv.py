"""The JPEG AI common-test-conditions colour pipeline: 8-bit RGB -> 10-bit RGB and 10-bit YUV 4:4:4.

Every JPEG AI metric is computed on these planes, so they are defined once here. The arithmetic is
float32, operation for operation as the reference software (src/codec/metrics/metrics.py,
DataClass.load_image) does it in PyTorch, so the rounded 10-bit codes are the reference's codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BITS = 10
PEAK10 = (1 << BITS) - 1  # 1023
# BT.709 luma weights and the chroma divisors 2(1-Kb), 2(1-Kr)
KR, KG, KB = 0.2126, 0.7152, 0.0722
DU, DV = 1.8556, 1.5748


@dataclass(frozen=True)
class Planes:
    """One image on the JPEG AI grid.

    rgb: HxWx3 float64 in [0, 1], each sample a multiple of 1/1023 (8-bit RGB re-quantised to 10 bits);
    yuv: 3xHxW float64 10-bit codes 0..1023 (Y, U, V), full range.
    """

    rgb: np.ndarray
    yuv: np.ndarray

    @property
    def y01(self) -> np.ndarray:
        """Y in [0, 1] (code / 1023), the input range of PSNR-HVS, VIF and NLPD."""
        return self.yuv[0] / PEAK10


def check_pair(ref: np.ndarray, dist: np.ndarray) -> None:
    """Raise ValueError unless ref and dist are equal-shape HxWx3 uint8 RGB arrays."""
    for name, a in (("reference", ref), ("distorted", dist)):
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"{name} image must be HxWx3 uint8 RGB, got {a.shape} {a.dtype}")
    if ref.shape != dist.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {dist.shape}")


def to_planes(rgb8: np.ndarray) -> Planes:
    """8-bit RGB -> 10-bit RGB and BT.709 full-range YUV 4:4:4, rounded to 10 bits.

    RGB is rescaled to [0, 1] and rounded to the 10-bit grid first (as the reference does when it
    loads a PNG with internal bit depth 10); then Y = Kr R + Kg G + Kb B, U = (B - Y)/1.8556 + 0.5,
    V = (R - Y)/1.5748 + 0.5, clamped to [0, 1] and rounded (half to even) to 10-bit codes.
    """
    x = np.asarray(rgb8)
    if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8 RGB, got {x.shape} {x.dtype}")
    f32, peak = np.float32, np.float32(PEAK10)
    rgb = np.round(x.astype(f32) / f32(255) * peak) / peak
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = f32(KR) * r + f32(KG) * g + f32(KB) * b
    u = (b - y) / f32(DU) + f32(0.5)
    v = (r - y) / f32(DV) + f32(0.5)
    yuv = np.round(np.clip(np.stack([y, u, v]), 0, 1) * peak)
    return Planes(rgb=rgb.astype(np.float64), yuv=yuv.astype(np.float64))


def pad_min(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a 2-D plane at the bottom/right to at least size x size (the reference's
    pad_tensor_till_size, which lets small images through metrics with a minimum support)."""
    h, w = x.shape
    if h >= size and w >= size:
        return x
    return np.pad(x, ((0, max(size - h, 0)), (0, max(size - w, 0))))
