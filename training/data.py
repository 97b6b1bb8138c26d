"""Training data: decoded once, held as one flat pixel pool, cropped inside the train step.

The training set is ~700 small photographs (~0.5 MP each), so holding them all
decoded (~0.5 GB) is cheaper than decoding on every step, and sampling crops on the
device keeps the host out of the step loop (no per-step host sync or copy).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_images(folder: str | os.PathLike) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files


def split_holdout(files: list[Path], every: int = 30) -> tuple[list[Path], list[Path]]:
    """Deterministic hold-out by name hash, stable as files are added.

    A device pack's `<name>.pack.webp` hashes as `<name>`, so it holds out the same images.
    """
    train, val = [], []
    for f in files:
        h = int(hashlib.sha1(f.name.removesuffix(".pack.webp").encode()).hexdigest(), 16)
        (val if h % every == 0 else train).append(f)
    return train, val


def load_rgb(path: Path, max_side: int = 0) -> np.ndarray:
    with Image.open(path) as im:
        if max_side and im.format == "JPEG":
            im.draft("RGB", (max_side, max_side))
        im = im.convert("RGB")
        if max_side and max(im.size) > max_side:
            s = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


def load_images(files: list[Path], patch: int, seed: int, max_side: int = 1280, downscale_prob: float = 0.5,
                progress: bool = True) -> list[np.ndarray]:
    """Decoded training images (at least patch x patch), plus one downscaled copy of each large image.

    A downscaled copy removes sensor noise and JPEG artefacts and adds scale diversity;
    only for images large enough to still give crops.
    """
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    it = files
    if progress:
        from tqdm import tqdm
        it = tqdm(files, desc="loading training images", unit="img")
    for f in it:
        img = load_rgb(f, max_side)
        if min(img.shape[:2]) >= patch:
            images.append(img)
        h, w = img.shape[:2]
        if min(h, w) >= 2 * patch and downscale_prob > 0:
            s = rng.uniform(0.5, 0.8)
            small = Image.fromarray(img).resize((round(w * s), round(h * s)), Image.LANCZOS)
            images.append(np.asarray(small))
    if not images:
        raise ValueError(f"no training image is at least {patch}x{patch}")
    return images


@dataclass
class Pool:
    """All training pixels in one flat uint8 array, so crops are sampled on the device.

    Why flat: images differ in size, and padding them to one shape would cost ~3x the memory.
    A crop is a gather of `offset + row * width + col` indices (int32: under 2^31 pixels).
    """

    pixels: np.ndarray      # (P, 3) uint8
    offsets: np.ndarray     # (n,) int32, first pixel of each image
    heights: np.ndarray     # (n,) int32
    widths: np.ndarray      # (n,) int32

    @classmethod
    def from_images(cls, images: list[np.ndarray]) -> Pool:
        sizes = [im.shape[0] * im.shape[1] for im in images]
        if sum(sizes) >= 2 ** 31:
            raise ValueError(f"{sum(sizes)} training pixels do not fit int32 indexes; lower max_side")
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
        return cls(np.concatenate([im.reshape(-1, 3) for im in images]), offsets,
                   np.array([im.shape[0] for im in images], np.int32),
                   np.array([im.shape[1] for im in images], np.int32))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.pixels, self.offsets, self.heights, self.widths


def sample_crops(pool: tuple, key, batch: int, patch: int):
    """`batch` random crops (uniform image, uniform position, random h/v flips) as float32 in [0, 1].

    Runs inside the jitted train step: no host work and no host-to-device copy per step.
    """
    import jax
    import jax.numpy as jnp
    pixels, offsets, heights, widths = pool
    ki, ky, kx, kh, kv = jax.random.split(key, 5)
    idx = jax.random.randint(ki, (batch,), 0, offsets.shape[0])
    h, w = heights[idx], widths[idx]
    y = jnp.floor(jax.random.uniform(ky, (batch,)) * (h - patch + 1)).astype(jnp.int32)
    x = jnp.floor(jax.random.uniform(kx, (batch,)) * (w - patch + 1)).astype(jnp.int32)
    r = jnp.arange(patch, dtype=jnp.int32)
    rows = (y[:, None] + r[None, :])[:, :, None] * w[:, None, None]
    flat = offsets[idx][:, None, None] + rows + (x[:, None] + r[None, :])[:, None, :]
    crops = pixels[flat]                                                  # (B, p, p, 3) uint8
    fh = jax.random.bernoulli(kh, 0.5, (batch, 1, 1, 1))
    fv = jax.random.bernoulli(kv, 0.5, (batch, 1, 1, 1))
    crops = jnp.where(fh, crops[:, :, ::-1], crops)
    crops = jnp.where(fv, crops[:, ::-1], crops)
    return crops.astype(jnp.float32) / 255.0


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of at most `size`, in multiples of 64 (the codec's padding unit)."""
    h, w = img.shape[:2]
    s = min(size, h, w) // 64 * 64
    y, x = (h - s) // 2, (w - s) // 2
    return img[y:y + s, x:x + s]


def step_delta(delta_range, seed: int, step: int) -> float:
    """The quantiser step a training step's y is quantised at: log-uniform in `delta_range` (lo, hi), a function
    of (seed, step) so a resumed run and both backends see the same; exactly 1.0 for the default (1, 1).

    The rate control runs every model at delta != 1 (Kodak: about 0.6-1.5), so a model may be trained to
    reconstruct well across that range rather than at 1 alone.
    """
    lo, hi = (float(v) for v in delta_range)
    if lo == hi:
        return lo
    u = np.random.default_rng([seed, step, 0x0D17A]).random()
    return float(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))))
