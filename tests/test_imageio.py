"""The encoder's image reader (encoder/imageio.py): every PNG bit depth, colour type and interlace read exactly;
16-bit, animated, malformed and oversized inputs refused from the header, in one line, with nothing written."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import KODAK, one_line_error, run_cli

# --------------------------------------------------------------------------- PNG files written by hand
# Pillow cannot write 16-bit RGB or interlaced PNG, and it is the reader under test, so the files are made here.

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _rows(samples: np.ndarray, depth: int) -> bytes:
    """Filter-0 scanlines of an HxWxC sample array at the given bit depth."""
    h = samples.shape[0]
    flat = samples.reshape(h, -1).astype(np.uint16)
    out = []
    for y in range(h):
        if depth == 16:
            row = flat[y].astype(">u2").tobytes()
        elif depth == 8:
            row = flat[y].astype(np.uint8).tobytes()
        else:   # MSB first, padded to a byte
            bits = ((flat[y][:, None] >> np.arange(depth - 1, -1, -1)) & 1).astype(np.uint8).ravel()
            row = np.packbits(bits).tobytes()
        out.append(b"\x00" + row)
    return b"".join(out)


def write_png(path: Path, samples: np.ndarray, colour_type: int, depth: int, interlace: int = 0,
              before_idat: bytes = b"", ihdr_depth: int | None = None) -> Path:
    """A PNG of HxWxC samples, optionally Adam7-interlaced; before_idat holds extra chunks (PLTE, tRNS, acTL)."""
    samples = samples if samples.ndim == 3 else samples[:, :, None]
    h, w = samples.shape[:2]
    if interlace:
        raw = b"".join(_rows(samples[y0::dy, x0::dx], depth) for x0, y0, dx, dy in ADAM7
                       if samples[y0::dy, x0::dx].size)
    else:
        raw = _rows(samples, depth)
    ihdr = struct.pack(">IIBBBBB", w, h, ihdr_depth or depth, colour_type, 0, 0, interlace)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + before_idat + _chunk(b"IDAT", zlib.compress(raw))
                     + _chunk(b"IEND", b""))
    return path


RNG = np.random.default_rng(17)


# --------------------------------------------------------------------------- bit depth from the image header

@pytest.mark.parametrize("colour_type,channels", [(2, 3), (6, 4), (4, 2), (0, 1)],
                         ids=["rgb16", "rgba16", "grey-alpha16", "grey16"])
def test_16_bit_png_is_refused(tmp_path: Path, colour_type: int, channels: int) -> None:
    from encoder.imageio import InputError, load_rgb8
    p = write_png(tmp_path / "x.png", RNG.integers(0, 65536, (6, 10, channels)), colour_type, 16)
    for flatten in (False, True):   # with --flatten-alpha the old code dropped the low byte of RGBA / LA too
        with pytest.raises(InputError, match="16-bit"):
            load_rgb8(p, flatten_alpha=flatten)


def test_16_bit_png_cli_one_line_and_nothing_written(tmp_path: Path) -> None:
    """The exact case of the report: encode.sh on a 16-bit RGB PNG exited 0."""
    src = np.asarray(Image.open(KODAK / "kodim05.png").convert("RGB"))[:64, :96].astype(np.uint16) * 257
    p = write_png(tmp_path / "rgb16.png", src, 2, 16)
    out = tmp_path / "out.bit"
    r = run_cli(["-m", "encoder", str(p), "0.25", str(out), "--registry", str(tmp_path / "no-registry.yaml")])
    line = one_line_error(r)
    assert "16-bit" in line and str(p) in line
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


def _grey_expected(v: np.ndarray, depth: int) -> np.ndarray:
    g = np.round(v.astype(np.float64) * 255 / (2 ** depth - 1)).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


@pytest.mark.parametrize("interlace", [0, 1], ids=["plain", "adam7"])
@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_grey_png_any_depth_encodes_exactly(tmp_path: Path, depth: int, interlace: int) -> None:
    from encoder.imageio import load_rgb8
    v = RNG.integers(0, 2 ** depth, (13, 11))
    p = write_png(tmp_path / "g.png", v, 0, depth, interlace)
    np.testing.assert_array_equal(load_rgb8(p), _grey_expected(v, depth))


@pytest.mark.parametrize("interlace", [0, 1], ids=["plain", "adam7"])
@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_palette_png_encodes_exactly(tmp_path: Path, depth: int, interlace: int) -> None:
    from encoder.imageio import load_rgb8
    n = 2 ** depth
    palette = RNG.integers(0, 256, (n, 3)).astype(np.uint8)
    idx = RNG.integers(0, n, (9, 14))
    p = write_png(tmp_path / "p.png", idx, 3, depth, interlace, before_idat=_chunk(b"PLTE", palette.tobytes()))
    np.testing.assert_array_equal(load_rgb8(p), palette[idx])


def test_interlaced_rgb_png_encodes_exactly(tmp_path: Path) -> None:
    from encoder.imageio import load_rgb8
    rgb = RNG.integers(0, 256, (17, 23, 3)).astype(np.uint8)
    np.testing.assert_array_equal(load_rgb8(write_png(tmp_path / "i.png", rgb, 2, 8, 1)), rgb)


def test_palette_with_transparency_follows_the_alpha_rule(tmp_path: Path) -> None:
    from encoder.imageio import InputError, load_rgb8
    palette = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    idx = np.array([[0, 1], [1, 0]])
    p = write_png(tmp_path / "t.png", idx, 3, 8, before_idat=_chunk(b"PLTE", palette.tobytes()) + _chunk(b"tRNS", b"\x00"))
    with pytest.raises(InputError, match="alpha"):
        load_rgb8(p)
    flat = load_rgb8(p, flatten_alpha=True)
    np.testing.assert_array_equal(flat[0, 0], [255, 255, 255])   # index 0 fully transparent -> white
    np.testing.assert_array_equal(flat[0, 1], [0, 0, 255])


def test_apng_is_refused(tmp_path: Path) -> None:
    from encoder.imageio import InputError, load_rgb8
    p = tmp_path / "anim.png"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(InputError, match="APNG"):
        load_rgb8(p)


@pytest.mark.parametrize("colour_type,depth", [(2, 4), (6, 2), (3, 16), (5, 8)])
def test_invalid_png_header_is_refused(tmp_path: Path, colour_type: int, depth: int) -> None:
    from encoder.imageio import InputError, load_rgb8
    p = write_png(tmp_path / "bad.png", np.zeros((2, 2, 3)), colour_type, 8, ihdr_depth=depth)
    with pytest.raises(InputError, match="invalid PNG"):
        load_rgb8(p)


def test_huge_png_dimensions_refused_from_header(tmp_path: Path) -> None:
    """70000 x 1 is refused from IHDR, without decoding."""
    from encoder.imageio import InputError, load_rgb8
    p = write_png(tmp_path / "wide.png", np.zeros((1, 70000, 3)), 2, 8)
    with pytest.raises(InputError, match="side limit"):
        load_rgb8(p)


def test_16_bit_netpbm_is_refused(tmp_path: Path) -> None:
    from encoder.imageio import InputError, load_rgb8
    p = tmp_path / "x.ppm"
    p.write_bytes(b"P6\n# comment\n8 4\n65535\n" + RNG.integers(0, 65536, (4, 8, 3)).astype(">u2").tobytes())
    with pytest.raises(InputError, match="16-bit"):
        load_rgb8(p)
    p8 = tmp_path / "y.ppm"
    rgb = RNG.integers(0, 256, (4, 8, 3)).astype(np.uint8)
    p8.write_bytes(b"P6 8 4 255\n" + rgb.tobytes())
    np.testing.assert_array_equal(load_rgb8(p8), rgb)


def _tiff_rgb16(path: Path, rgb16: np.ndarray) -> Path:
    """Minimal little-endian baseline TIFF, one strip, 16 bits per sample (Pillow cannot write one)."""
    h, w, _ = rgb16.shape
    pixels = rgb16.astype("<u2").tobytes()
    bps_off, data_off = 8, 16
    ifd_off = data_off + len(pixels)
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bps_off), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, data_off), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", t, typ, n) + (struct.pack("<HH", v, 0) if typ == 3 and n == 1 else struct.pack("<I", v))
        for t, typ, n, v in tags) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_off) + struct.pack("<HHHH", 16, 16, 16, 0) + pixels + ifd)
    return path


def test_16_bit_tiff_is_refused(tmp_path: Path) -> None:
    from encoder.imageio import InputError, load_rgb8
    p = _tiff_rgb16(tmp_path / "x.tif", RNG.integers(0, 65536, (4, 6, 3)))
    with Image.open(p) as im:   # the premise: Pillow reads it as plain 8-bit RGB
        assert im.mode == "RGB"
    with pytest.raises(InputError, match="16-bit"):
        load_rgb8(p)


def test_ordinary_8_bit_png_unchanged(tmp_path: Path) -> None:
    from encoder.imageio import load_rgb8, read_png_header
    rgb = RNG.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "ok.png")
    hdr = read_png_header(tmp_path / "ok.png")
    assert (hdr.width, hdr.height, hdr.bit_depth, hdr.colour_type, hdr.interlace, hdr.animated) == (7, 5, 8, 2, 0, False)
    np.testing.assert_array_equal(load_rgb8(tmp_path / "ok.png"), rgb)
