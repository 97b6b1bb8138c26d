"""Submission package: naming convention, verification with the packaged decoder, tamper detection."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from evaluation import package as P
from tests.conftest import KODAK, run_cli

pytestmark = pytest.mark.slow      # whole-CLI / whole-suite runs: `make test`, not `make check`


def test_naming_convention():
    assert P.stream_name("TeamX", "kodim01", 0.06) == "TeamX_kodim01_006.bits"
    assert P.stream_name("TeamX", "kodim01", 1.5) == "TeamX_kodim01_150.bits"
    assert P.parse_stream_name("TeamX_kodim_01_200.bits") == ("TeamX", "kodim_01", 2.0)
    with pytest.raises(P.PackageError):
        P.parse_stream_name("TeamX_kodim01_0.5.bits")


@pytest.fixture(scope="module")
def package(tiny_registry, tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg")
    imgs = d / "imgs"
    imgs.mkdir()
    Image.open(KODAK / "kodim23.png").crop((0, 0, 192, 128)).save(imgs / "k23.png")
    out = d / "sub"
    r = run_cli(["-m", "evaluation.package", str(imgs), "--team", "rl", "--out", str(out), "--targets", "0.12",
                 "--registry", str(tiny_registry), "--conformance-cases", "12", "--no-progress"])
    assert r.returncode == 0, r.stderr
    return out


def test_package_is_complete_and_verified(package):
    assert (package / "bitstreams" / "rl_k23_012.bits").exists()
    assert (package / "decoded" / "rl_k23_012.png").exists()
    assert (package / "decoder" / "decoder" / "__main__.py").exists()
    assert (package / "decoder" / "docker" / "Dockerfile").exists()
    assert not list((package / "decoder").rglob("*.enc.npz"))            # decode side only
    assert "results.csv" in json.loads((package / "MANIFEST.json").read_text())["files"]
    assert P.verify(package) == []
    conf = json.loads((package / "conformance.json").read_text())
    assert {c["name"] for c in conf["checks"]} == {"rate", "determinism", "parity", "robustness"}
    assert all(c["passed"] for c in conf["checks"])


def test_conformance_gate_catches_a_padded_stream(package, tmp_path, tiny_registry):
    """The gate judges the package's streams as written: one padded 20 % past the band fails rate."""
    import csv
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(package, bad)
    s = bad / "bitstreams" / "rl_k23_012.bits"
    s.write_bytes(s.read_bytes() + bytes(int(s.stat().st_size * 0.2) + 1))
    rows = []
    for r in csv.DictReader(open(bad / "results.csv")):
        rows.append(P.Row(r["image"], int(r["width"]), int(r["height"]), float(r["target_bpp"]),
                          float(r["real_bpp"]), int(r["bytes"]), float(r["mse"]), float(r["psnr_rgb"]), True,
                          r["bitstream"], r["bitstream_sha256"], r["decoded_sha256"], r["model"],
                          int(r["delta_code"])))
    failures = P.conformance_gate(package.parent / "imgs", bad, rows, str(tiny_registry), cases=4, progress=False)
    assert any(f.startswith("conformance/rate") for f in failures), failures


def test_tampered_stream_is_caught(package, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(package, bad)
    s = bad / "bitstreams" / "rl_k23_012.bits"
    data = bytearray(s.read_bytes())
    data[20] ^= 0x10
    s.write_bytes(bytes(data))
    failures = P.verify(bad)
    assert any("tampered" in f for f in failures)
    assert any("CRC" in f or "no PNG" in f for f in failures)
