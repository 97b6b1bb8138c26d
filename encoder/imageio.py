"""Reading input images, with a clear error for everything the challenge format is not."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class InputError(ValueError):
    """Unusable input image; the message is one line for the user."""


def load_rgb8(path: str | os.PathLike, flatten_alpha: bool = False) -> np.ndarray:
    """8-bit RGB as HxWx3 uint8. Grayscale and palette are converted; 16-bit, CMYK and alpha are refused."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") or im.info.get("bitdepth", 8) > 8:
                raise InputError(f"{path}: {mode} ({'16-bit' if mode.startswith('I;16') or mode == 'I' else mode}) "
                                 "input is not supported; convert to 8-bit RGB")
            if mode == "CMYK" or mode == "YCbCr" or mode == "LAB" or mode == "HSV":
                raise InputError(f"{path}: {mode} input is not supported; convert to 8-bit sRGB")
            if has_alpha:
                if not flatten_alpha:
                    raise InputError(f"{path}: image has an alpha channel; pass --flatten-alpha to composite on white")
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, rgba)
            rgb = im.convert("RGB")
            arr = np.asarray(rgb, dtype=np.uint8)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot read image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{path}: unexpected image shape {arr.shape}")
    if arr.shape[0] > 1 << 16 or arr.shape[1] > 1 << 16:
        raise InputError(f"{path}: {arr.shape[1]}x{arr.shape[0]} exceeds the 65536-pixel side limit")
    return arr


def image_paths(folder: str | os.PathLike) -> list[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".ppm", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"))
    if not files:
        raise InputError(f"{folder}: no images")
    return files
