"""The JPEG AI metric set (evaluation.metrics) against the reference implementations.

tests/fixtures/metrics/reference.json holds what the PyTorch reference implementations the JPEG AI
reference software uses score on the fixture pairs (made once by make_reference.py there; torch
never runs here). Each metric must agree within TOLERANCE on every pair.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from evaluation import ffmpeg, metrics
from evaluation.metrics.yuv import to_planes
from tests.conftest import ROOT
from tests.fixtures.metrics.make_reference import HERE, load, pairs

REFERENCE = json.loads((HERE / "reference.json").read_text())
# absolute tolerance per metric: float32 (reference) vs float64 (ours) arithmetic, not method
TOLERANCE = {"psnr_y": 1e-4, "psnr_u": 1e-4, "psnr_v": 1e-4, "ms_ssim": 2e-5, "iw_ssim": 2e-5, "vif": 2e-5,
             "fsim": 5e-5, "nlpd": 2e-5, "psnr_hvs": 1e-4, "vmaf": 1e-3}
HAS_VMAF = ffmpeg.has_filter("libvmaf")


@pytest.fixture(scope="module")
def ours() -> dict[str, dict[str, float]]:
    """Our scores of every fixture pair, computed once."""
    names = tuple(n for n in metrics.JPEG_AI_NAMES if HAS_VMAF or n != "vmaf")
    return {p["name"]: metrics.jpeg_ai(*load(p), names) for p in pairs()}


def test_fixture_list_matches_reference():
    assert [p["name"] for p in REFERENCE["pairs"]] == [p["name"] for p in pairs()]
    assert len(pairs()) >= 6 and all(p["yuv_codes_match_ours"] for p in REFERENCE["pairs"])
    assert set(TOLERANCE) == set(metrics.JPEG_AI_NAMES) and set(metrics.MEAN7) <= set(TOLERANCE)


@pytest.mark.parametrize("name", metrics.JPEG_AI_NAMES)
def test_matches_reference(ours, name):
    if name == "vmaf" and not HAS_VMAF:
        pytest.skip("ffmpeg without libvmaf")
    dev = {p["name"]: abs(ours[p["name"]][name] - p["scores"][name]) for p in REFERENCE["pairs"]}
    worst = max(dev, key=dev.get)
    assert dev[worst] <= TOLERANCE[name], f"{name}: {worst} off by {dev[worst]:.3g}"
    # the pairs span a real range, so agreement is not agreement on a constant
    values = [p["scores"][name] for p in REFERENCE["pairs"]]
    assert max(values) - min(values) > 100 * TOLERANCE[name]


@pytest.mark.parametrize("name", metrics.JPEG_AI_NAMES)
def test_identical_is_perfect_and_distortion_is_worse(ours, name):
    if name == "vmaf" and not HAS_VMAF:
        pytest.skip("ffmpeg without libvmaf")
    pair = pairs()[0]
    ref, _ = load(pair)
    same = metrics.jpeg_ai(ref, ref, (name,))[name]
    worse = ours[pair["name"]][name]
    higher_better = metrics.JPEG_AI[name][1]
    perfect = {"nlpd": 0.0, "ms_ssim": 1.0, "iw_ssim": 1.0, "vif": 1.0, "fsim": 1.0}.get(name, None)
    if perfect is not None:
        assert same == pytest.approx(perfect, abs=1e-9)
    elif name.startswith("psnr"):
        assert same == metrics.PSNR_CAP_DB
    assert (same > worse) if higher_better else (same < worse)


def test_quality_rises_with_rate(ours):
    """More bits, better scores: every metric orders each codec's three rates."""
    for img in ("kodim05", "kodim23"):
        for codec in ("ours", "j2k"):
            for name in metrics.MEAN7:
                if name not in ours[f"{img}_{codec}_0.25"]:
                    continue
                s = [ours[f"{img}_{codec}_{r}"][name] for r in ("0.25", "0.5", "1.0")]
                assert s == sorted(s, reverse=not metrics.JPEG_AI[name][1]), (img, codec, name, s)


def test_yuv_pipeline():
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    p = to_planes(px)
    assert p.yuv[:, 0, 0].tolist() == [1023, 512, 512]   # 0.5 * 1023 = 511.5 rounds to even
    assert p.yuv[:, 0, 1].tolist() == [0, 512, 512]
    assert p.yuv[0, 0, 2] == round(0.2126 * 1023) and p.yuv[2, 0, 2] == 1023  # V clamps at 1
    assert p.yuv[1, 0, 3] == 1023 and p.yuv[0, 0, 3] == round(0.0722 * 1023)
    assert np.all(p.rgb * 1023 == np.round(p.rgb * 1023))
    with pytest.raises(ValueError, match="uint8"):
        to_planes(px.astype(np.float32))


def test_public_functions_agree_with_jpeg_ai():
    ref, dist = load(pairs()[3])
    scores = metrics.jpeg_ai(ref, dist, ("psnr_y", "psnr_u", "nlpd"))
    assert metrics.psnr_y(ref, dist) == scores["psnr_y"] and metrics.nlpd(ref, dist) == scores["nlpd"]
    assert metrics.psnr_u(ref, dist) == scores["psnr_u"]
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.vif(ref, dist[:-1])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluation.metrics", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False)


def test_cli_json_has_every_metric():
    p = pairs()[1]
    proc = _cli(str(HERE / p["ref"]), str(HERE / p["dist"]), "--json", *([] if HAS_VMAF else ["--no-vmaf"]))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == set(metrics.JPEG_AI_NAMES) - (set() if HAS_VMAF else {"vmaf"})
    ref = next(r for r in REFERENCE["pairs"] if r["name"] == p["name"])["scores"]
    assert math.isclose(doc["psnr_y"], ref["psnr_y"], abs_tol=TOLERANCE["psnr_y"])


@pytest.mark.parametrize("args", [("missing.png", "other.png"), ("only_one.png",)])
def test_cli_errors_are_one_line(args):
    proc = _cli(*args)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("case,expect", [("16-bit", "16-bit"), ("size", "shape mismatch"), ("missing", "no such file")])
def test_cli_refuses_a_16_bit_image_a_size_mismatch_and_a_missing_file_in_one_line(tmp_path, case, expect):
    """A 16-bit PNG must be refused, not quietly cut to 8 bits; sizes must match; a missing file is named."""
    from PIL import Image
    good = tmp_path / "good.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(good)
    other = {"16-bit": tmp_path / "deep.png", "size": tmp_path / "small.png", "missing": tmp_path / "nope.png"}[case]
    if case == "16-bit":
        Image.fromarray(np.full((64, 64), 30000, np.uint16)).save(other)
    elif case == "size":
        Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(other)
    proc = _cli(str(good), str(other), "--no-vmaf")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], proc.stderr


# ---------------------------------------------------------------- evaluation integration


def _rows(codec: str, scale: float) -> list[dict]:
    """Synthetic per-image rows: every JPEG AI metric rises with rate (NLPD falls); rates x scale."""
    rows = []
    for t in (0.25, 0.5, 0.75, 1.0):
        q = math.log(t)
        row = {"codec": codec, "image": "a", "target": t, "bpp": t * scale, "within_band": True, "psnr_rgb": q,
               "psnr_y": q, "msssim_y": 0.9, "msssim_rgb": 0.9, "vmaf": q, "enc_s": 0.0, "dec_s": 0.0, "calls": 1}
        for n in metrics.JPEG_AI_NAMES:
            row[f"jai_{n}"] = -q if n == "nlpd" else (str(q) if n == "fsim" else q)  # str: as read back from CSV
        rows.append(row)
    return rows


def test_jai_bd_table_per_metric_and_mean7():
    from evaluation import report

    summary = report.summarize(_rows("jpeg2000", 1.0) + _rows("ours", 0.8) + _rows("jpeg", 1.25))
    table = {r["anchor"]: r for r in report.jai_bd_table(summary)}
    assert set(table) == {"jpeg2000", "jpeg"}
    for n in (*metrics.JPEG_AI_NAMES, "mean7"):
        assert table["jpeg2000"][n] == pytest.approx(-20.0, abs=1e-6), n   # NLPD's sign handled
        assert table["jpeg"][n] == pytest.approx(-36.0, abs=1e-6), n
    md = report.jai_bd_markdown(list(table.values()))
    assert "mean of 7" in md and md.count("-20.0%") == len(metrics.JPEG_AI_NAMES) + 1
    assert report.jai_bd_table(summary, test="avif") == []


def test_jai_mean7_is_nan_when_one_metric_is_missing():
    from evaluation import report

    rows = _rows("jpeg2000", 1.0) + _rows("ours", 0.8)
    for r in rows:
        r["jai_vmaf"] = ""  # --no-vmaf, read back from a CSV
    (row,) = report.jai_bd_table(report.summarize(rows))
    assert math.isnan(row["vmaf"]) and math.isnan(row["mean7"]) and row["fsim"] == pytest.approx(-20.0)


def test_runner_scores_carry_the_jpeg_ai_set():
    from evaluation import runner

    ref, dist = load(pairs()[0])
    row = runner.score(ref, dist, with_vmaf=False)
    assert set(runner.JAI_FIELDS) <= set(row) and set(runner.JAI_FIELDS) <= set(runner.CSV_FIELDS)
    expect = REFERENCE["pairs"][0]["scores"]
    assert row["jai_fsim"] == pytest.approx(expect["fsim"], abs=TOLERANCE["fsim"]) and math.isnan(row["jai_vmaf"])
    assert row["jai_psnr_y"] != pytest.approx(row["psnr_y"], abs=0.01)  # BT.709 10-bit vs BT.601 float: not the same


def test_training_and_legacy_names_still_import():
    from evaluation.metrics import msssim_y, psnr_from_mse, psnr_rgb

    assert msssim_y is metrics.ms_ssim_y and psnr_from_mse(1.0) == pytest.approx(48.1308, abs=1e-4)
    ref, dist = load(pairs()[0])
    assert psnr_rgb(ref, dist) < metrics.PSNR_CAP_DB
