"""Bad input never produces a traceback: one line on stderr, non-zero exit, no partial file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import KODAK, run_cli


def _one_line_error(r):
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).convert("I;16").save(d / "16bit.png")
    Image.new("CMYK", (8, 8)).save(d / "cmyk.jpg")
    Image.new("RGBA", (8, 8)).save(d / "alpha.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (d / "empty.png").write_bytes(b"")
    return d


@pytest.mark.parametrize("name,needle", [("missing.png", "no such file"), ("16bit.png", "16-bit"),
                                         ("cmyk.jpg", "CMYK"), ("alpha.png", "alpha"),
                                         ("corrupt.png", "cannot read"), ("empty.png", "cannot read")])
def test_encoder_bad_images(bad_images, tiny_registry, tmp_path, name, needle):
    out = tmp_path / "o.bit"
    r = run_cli(["-m", "encoder", str(bad_images / name), "0.25", str(out), "--registry", str(tiny_registry)])
    assert needle in _one_line_error(r)
    assert not out.exists()


@pytest.mark.parametrize("target", ["0", "-1", "nan", "inf", "abc"])
def test_encoder_bad_targets(target, tmp_path):
    r = run_cli(["-m", "encoder", str(KODAK / "kodim01.png"), target, str(tmp_path / "o.bit")])
    assert "target" in _one_line_error(r)


def test_encoder_bad_refine(tmp_path):
    r = run_cli(["-m", "encoder", str(KODAK / "kodim01.png"), "0.25", str(tmp_path / "o.bit"), "--refine", "-1"])
    assert "--refine" in _one_line_error(r)
    assert not (tmp_path / "o.bit").exists()


@pytest.mark.parametrize("argv", [
    ["encoder", "x.png", "0.25", "o.bit", "--aim", "abc"],
    ["encoder", "x.png", "0.25", "o.bit", "--refine", "1.5"],
    ["decoder", "x.bit", "o.png", "--max-pixels", "many"],
    ["decoder", "x.bit"],
    ["evaluation", "images"],
    ["evaluation", "images", "--out", "o", "--refine", "-1"],
    ["evaluation.package", "images", "--team", "t", "--out", "o", "--refine", "-3"],
    ["conformance", "images", "--refine", "-2"],
])
def test_usage_errors_are_one_line(argv):
    """argparse's own errors keep the contract (models.cli.ArgumentParser): one line, exit 2, no usage block;
    --refine is declared once (encoder.refine.add_refine_option) and refused below 0 by every tool."""
    r = run_cli(["-m", *argv])
    line = _one_line_error(r)
    assert r.returncode == 2 and line.startswith(f"python -m {argv[0]}: error: ") and "--help" in line, line
    if "--refine" in argv:
        assert "--refine" in line


@pytest.mark.slow
def test_encoder_unreachable_writes_nothing(tiny_registry, tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "one.png")
    r = run_cli(["-m", "encoder", str(tmp_path / "one.png"), "0.06", str(tmp_path / "o.bit"),
                 "--registry", str(tiny_registry)])
    assert "achievable range" in _one_line_error(r) and r.returncode == 2
    assert not (tmp_path / "o.bit").exists()
    r = run_cli(["-m", "encoder", str(tmp_path / "one.png"), "0.06", str(tmp_path / "o.bit"),
                 "--registry", str(tiny_registry), "--best-effort"])
    assert r.returncode == 2 and (tmp_path / "o.bit").exists() and "OUTSIDE the band" in r.stderr


@pytest.mark.parametrize("payload", [b"", b"R", b"\x00" * 64, bytes(range(256)) * 4])
def test_decoder_garbage(payload, tiny_registry, tmp_path):
    src, out = tmp_path / "g.bit", tmp_path / "g.png"
    src.write_bytes(payload)
    _one_line_error(run_cli(["-m", "decoder", str(src), str(out), "--registry", str(tiny_registry)]))
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


def test_decoder_missing_file(tmp_path):
    assert "no such file" in _one_line_error(run_cli(["-m", "decoder", str(tmp_path / "nope.bit"), str(tmp_path / "o.png")]))


@pytest.mark.slow
def test_single_and_batch_cli(tiny_registry, tmp_path):
    img = tmp_path / "imgs"
    img.mkdir()
    Image.open(KODAK / "kodim23.png").crop((0, 0, 192, 128)).save(img / "a.png")
    r = run_cli(["-m", "encoder", str(img / "a.png"), "0.12", str(tmp_path / "a.bit"), "--registry", str(tiny_registry)])
    assert r.returncode == 0, r.stderr
    assert "bpp" in r.stdout
    r = run_cli(["-m", "encoder", str(img), "--targets", "0.06,0.12", "--out", str(tmp_path / "bits"),
                 "--registry", str(tiny_registry)])
    assert (tmp_path / "bits" / "a_012.bit").exists() and (tmp_path / "bits" / "rates.csv").exists()
    r = run_cli(["-m", "decoder", "--dir", str(tmp_path / "bits"), str(tmp_path / "png"), "--registry", str(tiny_registry)])
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "png" / "a_012.png").size == (192, 128)
