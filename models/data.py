"""Training data: decoded once into RAM, cropped in numpy, fed through tf.data.

The training set is ~700 small photographs (~0.5 MP each), so holding them all
decoded (~0.5 GB) is cheaper than JPEG/WebP decoding on every step, which would
starve the two cores the train step needs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_images(folder: str | os.PathLike) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files


def split_holdout(files: list[Path], every: int = 30) -> tuple[list[Path], list[Path]]:
    """Deterministic hold-out by name hash, stable as files are added."""
    train, val = [], []
    for f in files:
        h = int(hashlib.sha1(f.name.encode()).hexdigest(), 16)
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


class CropSampler:
    """Random crops with flips and random downscaling, from images held in RAM."""

    def __init__(self, files: list[Path], patch: int, seed: int, max_side: int = 1280,
                 downscale_prob: float = 0.5, progress: bool = True):
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        self.images: list[np.ndarray] = []
        it = files
        if progress:
            from tqdm import tqdm
            it = tqdm(files, desc="loading training images", unit="img")
        for f in it:
            img = load_rgb(f, max_side)
            if min(img.shape[:2]) >= patch:
                self.images.append(img)
            # A downscaled copy removes sensor noise and JPEG artefacts and adds
            # scale diversity; only for images large enough to still give crops.
            h, w = img.shape[:2]
            if min(h, w) >= 2 * patch and downscale_prob > 0:
                s = self.rng.uniform(0.5, 0.8)
                small = Image.fromarray(img).resize((round(w * s), round(h * s)), Image.LANCZOS)
                self.images.append(np.asarray(small))
        if not self.images:
            raise ValueError(f"no training image is at least {patch}x{patch}")

    def crop(self) -> np.ndarray:
        img = self.images[self.rng.integers(len(self.images))]
        h, w = img.shape[:2]
        y = self.rng.integers(h - self.patch + 1)
        x = self.rng.integers(w - self.patch + 1)
        c = img[y:y + self.patch, x:x + self.patch]
        if self.rng.random() < 0.5:
            c = c[:, ::-1]
        if self.rng.random() < 0.5:
            c = c[::-1]
        return np.ascontiguousarray(c)

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        while True:
            yield np.stack([self.crop() for _ in range(batch)])


def dataset(sampler: CropSampler, batch: int):
    import tensorflow as tf
    spec = tf.TensorSpec((batch, sampler.patch, sampler.patch, 3), tf.uint8)
    ds = tf.data.Dataset.from_generator(lambda: sampler.batches(batch), output_signature=spec)
    return ds.map(lambda x: tf.cast(x, tf.float32) / 255.0).prefetch(4)
