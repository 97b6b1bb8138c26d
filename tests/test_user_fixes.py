"""What a new user hit (issue 17, items 1-6): each test here failed on the code before the fix."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import KODAK, ROOT, run_cli


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


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


# --------------------------------------------------------------------------- item 1: bit depth from the PNG header

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
    line = _one_line_error(r)
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


# --------------------------------------------------------------------------- item 2: the demo's model note

@pytest.mark.slow
def test_demo_prints_the_note_of_the_model_used(tiny_registry: Path, tmp_path: Path) -> None:
    """Only the high model carries a note; a low-rate demo must not print it (the old demo printed the first note)."""
    from decoder.bitstream import parse_header
    from models.targets import TARGETS
    reg = yaml.safe_load(tiny_registry.read_text())
    for m in reg["models"]:
        m["weights"] = str((tiny_registry.parent / m["weights"]).resolve())
        m["note"] = "NOTE-OF-HI" if m["name"] == "hi" else ""
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(reg, sort_keys=False))
    img = tmp_path / "a.png"
    Image.open(KODAK / "kodim23.png").crop((0, 0, 192, 128)).save(img)
    r = run_cli(["-m", "encoder.demo", str(img), "0.12", "--out", str(tmp_path / "out"), "--registry", str(registry)],
                env_extra={"RATELOCK_PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    header = parse_header((tmp_path / "out" / "a.bit").read_bytes())
    used = next(m for m in reg["models"] if float(m["target"]) == TARGETS[header.target_index])
    assert used["name"] == "lo", "premise: the 0.12 demo uses the low model, whose entry has no note"
    assert "NOTE-OF-HI" not in r.stdout, r.stdout
    assert "model used: lo" in r.stdout, r.stdout


# --------------------------------------------------------------------------- item 3: unwritable destination

def _cannot_create_in(d: Path) -> bool:
    try:
        fd, tmp = tempfile.mkstemp(dir=d)
    except OSError:
        return True
    os.close(fd)
    os.unlink(tmp)
    return False


@pytest.fixture
def locked_dir(tmp_path: Path):
    """A folder no file can be created in, also when the tests run as root (then a read-only kernel folder)."""
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o555)
    try:
        if _cannot_create_in(d):
            yield d
            return
        for alt in (Path("/sys"), Path("/proc")):
            if alt.is_dir() and _cannot_create_in(alt):
                yield alt
                return
        pytest.skip("no folder here refuses file creation (root without /sys or /proc)")
    finally:
        d.chmod(0o755)


def _refused_for(line: str, user_path: Path) -> None:
    assert str(user_path) in line, line
    assert ".tmp" not in line and "probe" not in line, line


def test_write_atomic_names_the_users_path(locked_dir: Path) -> None:
    from models.pngio import write_bytes_atomic, write_png_atomic
    for write, arg in ((write_bytes_atomic, b"x"), (write_png_atomic, np.zeros((2, 2, 3), np.uint8))):
        with pytest.raises(OSError) as e:
            write(locked_dir / "o.out", arg)
        _refused_for(str(e.value), locked_dir / "o.out")


def test_encoder_refuses_unwritable_output_before_any_work(locked_dir: Path, tmp_path: Path) -> None:
    """A registry that does not exist: the output check must come first (the old CLI loaded models, encoded, then failed)."""
    img = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(img)
    out = locked_dir / "y.bit"
    r = run_cli(["-m", "encoder", str(img), "0.25", str(out), "--registry", str(tmp_path / "missing.yaml")])
    _refused_for(_one_line_error(r), out)
    r = run_cli(["-m", "encoder", str(tmp_path), "--targets", "0.25", "--out", str(locked_dir / "batch"),
                 "--registry", str(tmp_path / "missing.yaml")])
    _refused_for(_one_line_error(r), locked_dir / "batch")


def test_decoder_refuses_unwritable_output_before_any_work(locked_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.bit"
    src.write_bytes(b"R" * 40)
    out = locked_dir / "y.png"
    r = run_cli(["-m", "decoder", str(src), str(out), "--registry", str(tmp_path / "missing.yaml")])
    _refused_for(_one_line_error(r), out)
    r = run_cli(["-m", "decoder", "--dir", str(tmp_path), str(locked_dir / "pngs"),
                 "--registry", str(tmp_path / "missing.yaml")])
    _refused_for(_one_line_error(r), locked_dir / "pngs")


# --------------------------------------------------------------------------- item 4: no silent python3 fallback

def _fake_checkout(tmp_path: Path, script: str) -> Path:
    root = tmp_path / "checkout"
    (root / Path(script).parent).mkdir(parents=True)
    shutil.copy2(ROOT / script, root / script)
    (root / "models").mkdir(exist_ok=True)
    shutil.copy2(ROOT / "models" / "python.sh", root / "models" / "python.sh")   # both scripts source it
    return root


def _run_script(root: Path, script: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RATELOCK_PYTHON"}
    env.update(env_extra or {})
    return subprocess.run([str(root / script), "in", "0.25", "out"], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", ["encoder/encode.sh", "decoder/decode.sh"])
@pytest.mark.parametrize("venv", ["none", "dangling", "cannot-run"])
def test_shell_entry_points_say_how_to_fix_a_broken_venv(tmp_path: Path, script: str, venv: str) -> None:
    root = _fake_checkout(tmp_path, script)
    py = root / ".venv" / "bin" / "python"
    if venv != "none":
        py.parent.mkdir(parents=True)
        if venv == "dangling":       # the base interpreter the venv was made from is gone
            py.symlink_to(tmp_path / "gone" / "python3.11")
        else:
            py.write_text("#!/bin/sh\nexit 1\n")
            py.chmod(0o755)
    line = _one_line_error(_run_script(root, script))
    assert "make install" in line and str(root) in line, line


@pytest.mark.parametrize("script", ["encoder/encode.sh", "decoder/decode.sh"])
def test_shell_entry_points_use_explicit_ratelock_python(tmp_path: Path, script: str) -> None:
    root = _fake_checkout(tmp_path, script)   # no .venv at all
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\necho \"ran $*\"\n")
    fake.chmod(0o755)
    r = _run_script(root, script, {"RATELOCK_PYTHON": str(fake)})
    assert r.returncode == 0 and r.stdout.strip() == f"ran -m {Path(script).parent} in 0.25 out", (r.stdout, r.stderr)
    r = _run_script(root, script, {"RATELOCK_PYTHON": str(tmp_path / "nope")})
    assert "RATELOCK_PYTHON" in _one_line_error(r)


# --------------------------------------------------------------------------- item 5: make bench takes KODAK=

def test_make_bench_passes_kodak_through() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    r = subprocess.run([make, "-n", "bench", "KODAK=/some/kodak dir"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    bench = [l for l in r.stdout.splitlines() if "evaluation.bench" in l]
    assert bench and "--kodak" in bench[-1] and "/some/kodak dir" in bench[-1], r.stdout


# --------------------------------------------------------------------------- item 6: packaging

def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def test_install_requires_matches_the_decoder_runtime() -> None:
    """Every pinned decoder requirement (tensorflow-probability included) is in install_requires, same pin."""
    reqs = {l.split("==")[0].lower(): l for l in (ROOT / "decoder" / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")}
    install = {re.split(r"[=<>~!]", l.strip())[0].lower(): l.strip()
               for l in _setup_cfg()["options"]["install_requires"].splitlines() if l.strip()}
    assert "tensorflow-probability" in install
    for name in ("tensorflow", "tensorflow-compression", "tensorflow-probability", "numpy"):
        assert install[name] == reqs[name], (install[name], reqs[name])


def test_pytest_filters_only_named_warnings() -> None:
    """No blanket `ignore::DeprecationWarning`: each filter names the message it silences."""
    filters = [l.strip() for l in _setup_cfg()["tool:pytest"]["filterwarnings"].splitlines() if l.strip()]
    assert filters
    for f in filters:
        action, message, *rest = f.split(":", 2) + [""]
        assert action != "ignore" or message.strip(), f"blanket filter hides every warning of its kind: {f}"


@pytest.mark.parametrize("module,args", [("encoder", ["nope.png", "0.25", "o.bit"]), ("decoder", ["nope.bit", "o.png"])])
def test_one_program_name_in_usage_and_errors(module: str, args: list[str], tmp_path: Path) -> None:
    r = run_cli(["-m", module, *[str(tmp_path / a) for a in args]])
    assert _one_line_error(r).startswith(f"python -m {module}: error: "), r.stderr
    assert f"usage: python -m {module}" in run_cli(["-m", module, "--help"]).stdout
    for f in (ROOT / module).glob("*.py"):
        assert f"ratelock-{module[:6]}" not in f.read_text(), f
