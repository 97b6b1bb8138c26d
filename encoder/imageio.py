"""Reading input images, with a clear error for everything the challenge format is not."""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from decoder.bitstream import MAX_PIXELS  # one owner of the pixel bound, shared with the decoder

MAX_SIDE = 1 << 16
MAX_CHUNKS = 1 << 16     # chunks scanned per PNG (IDAT included): bounds the header scan on hostile files
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> (name, allowed bit depths), from the PNG specification (ISO/IEC 15948, table 11.1).
PNG_COLOUR_TYPES = {0: ("greyscale", (1, 2, 4, 8, 16)), 2: ("RGB", (8, 16)), 3: ("palette", (1, 2, 4, 8)),
                    4: ("greyscale+alpha", (8, 16)), 6: ("RGBA", (8, 16))}


class InputError(ValueError):
    """Unusable input image; the message is one line for the user."""


@dataclass(frozen=True)
class PngHeader:
    """What the PNG file itself says, read from its chunks (Pillow hides the bit depth, and a 16-bit file must be refused)."""
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int
    animated: bool       # an acTL chunk anywhere: APNG (after IDAT it is invalid, and Pillow only warns)


def read_png_header(path: str | os.PathLike) -> PngHeader | None:
    """IHDR of a PNG file plus whether it is an APNG; None if the file is not a well-formed PNG.

    Every chunk header up to IEND is read (data skipped), so what Pillow would use later is seen here:
    a second IHDR (Pillow takes the last one, past the checks on the first) makes the file malformed.
    Malformed files return None; load_rgb8 then refuses them in one line.
    """
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return None
            head = f.read(8 + 13)
            if len(head) < 21 or head[:8] != struct.pack(">I", 13) + b"IHDR":
                return None
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", head[8:])
            f.seek(4, os.SEEK_CUR)                      # IHDR CRC
            animated = False
            for _ in range(MAX_CHUNKS):
                hdr = f.read(8)
                if len(hdr) < 8:
                    break
                length, kind = struct.unpack(">I", hdr[:4])[0], hdr[4:]
                if kind == b"IEND":
                    break
                if kind == b"IHDR":
                    return None
                animated = animated or kind == b"acTL"
                f.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None
    return PngHeader(w, h, depth, ctype, interlace, animated)


def _check_png(path: str | os.PathLike, hdr: PngHeader) -> None:
    """Refuse what the codec cannot represent exactly, before Pillow silently narrows it."""
    if hdr.colour_type not in PNG_COLOUR_TYPES:
        raise InputError(f"{path}: invalid PNG colour type {hdr.colour_type}")
    name, depths = PNG_COLOUR_TYPES[hdr.colour_type]
    if hdr.bit_depth not in depths:
        raise InputError(f"{path}: invalid PNG bit depth {hdr.bit_depth} for {name}")
    if hdr.bit_depth > 8:
        raise InputError(f"{path}: {hdr.bit_depth}-bit {name} PNG is not supported; convert to 8-bit RGB")
    if hdr.interlace not in (0, 1):
        raise InputError(f"{path}: invalid PNG interlace method {hdr.interlace}")
    if hdr.animated:
        raise InputError(f"{path}: animated PNG (APNG) is not supported; export a single frame")
    if not (1 <= hdr.width <= MAX_SIDE and 1 <= hdr.height <= MAX_SIDE):
        raise InputError(f"{path}: {hdr.width}x{hdr.height} PNG is outside the 1..{MAX_SIDE}-pixel side limit")
    if hdr.width * hdr.height > MAX_PIXELS:
        raise InputError(f"{path}: {hdr.width}x{hdr.height} PNG exceeds the {MAX_PIXELS / 1e6:.0f} MP limit")


def _pnm_maxval(path: str | os.PathLike) -> int | None:
    """maxval of a P2/P3/P5/P6 netpbm file (Pillow opens 16-bit P6 as 8-bit RGB without a word)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head[:2] not in (b"P2", b"P3", b"P5", b"P6"):
        return None
    tokens: list[bytes] = []
    for line in head[2:].split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 3:
            break
    try:
        return int(tokens[2])
    except (IndexError, ValueError):
        return None


def _check_bit_depth(path: str | os.PathLike, im: Image.Image) -> None:
    """Formats other than PNG whose samples can be wider than 8 bits while Pillow reports an 8-bit mode."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        raise InputError(f"{path}: {mode} (more than 8 bits per sample) input is not supported; convert to 8-bit RGB")
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        if max(bits) > 8:
            raise InputError(f"{path}: {max(bits)}-bit TIFF is not supported; convert to 8-bit RGB")
    if im.format == "PPM":
        maxval = _pnm_maxval(path)
        if maxval is not None and maxval > 255:
            raise InputError(f"{path}: 16-bit netpbm (maxval {maxval}) is not supported; convert to 8-bit RGB")


@contextlib.contextmanager
def _quiet():
    """Pillow's warnings (decompression bomb, "Invalid APNG", ...) would be stray stderr lines in a CLI that
    promises one line; sizes are bounded by MAX_PIXELS here instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def load_rgb8(path: str | os.PathLike, flatten_alpha: bool = False) -> np.ndarray:
    """8-bit RGB as HxWx3 uint8. Greyscale, palette and interlaced PNG are converted exactly;
    16-bit, CMYK, APNG and alpha are refused (alpha unless flatten_alpha)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    hdr = read_png_header(p)
    if hdr is not None:
        _check_png(path, hdr)
    try:
        with _quiet(), Image.open(p) as im:       # _quiet() is entered first: it covers the open too
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"{path}: {im.width}x{im.height} image exceeds the {MAX_PIXELS / 1e6:.0f} MP limit")
            if hdr is None and im.format == "PNG":   # Pillow found a PNG our reader could not parse
                raise InputError(f"{path}: cannot read image (malformed PNG header)")
            _check_bit_depth(path, im)
            im.load()
            mode = im.mode
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
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
    except MemoryError:
        raise InputError(f"{path}: image too large to decode in memory") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds on hostile files (IndexError, struct.error, ...)
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot read image ({why})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{path}: unexpected image shape {arr.shape}")
    if arr.shape[0] > MAX_SIDE or arr.shape[1] > MAX_SIDE:
        raise InputError(f"{path}: {arr.shape[1]}x{arr.shape[0]} exceeds the {MAX_SIDE}-pixel side limit")
    return arr


def image_paths(folder: str | os.PathLike) -> list[Path]:
    """The images of a batch folder, sorted; refuses a folder with none (a typo'd path should not 'succeed')."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{folder}: not a folder")
    suffixes = (".png", ".ppm", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in suffixes)
    if not files:
        raise InputError(f"{folder}: no images")
    return files
