"""Tests of the evaluation package: BD-rate, rate matching, summary maths, skips and CLI errors.

Small on purpose (crops, one target or two): the whole file runs in well under a minute.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluation import bd, codecs, metrics, ratematch, report  # noqa: E402
from evaluation.__main__ import main  # noqa: E402
from evaluation.datasets import KODAK  # noqa: E402
from models.targets import TOLERANCE, within_band  # noqa: E402

# A plausible anchor curve (JPEG 2000 on Kodak, per-target means).
RATES = [0.0601, 0.1200, 0.2495, 0.4989, 0.7490, 0.9991, 1.4983, 1.9975]
PSNR = [25.10, 26.91, 29.26, 32.18, 34.31, 36.00, 38.66, 40.80]


def _crop(size: int = 192, name: str = "kodim23.png") -> np.ndarray:
    """Centre crop of a Kodak image, or a synthetic textured image if shared/ is absent."""
    path = KODAK / name
    if path.exists():
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        y, x = (h - size) // 2, (w - size) // 2
        return np.ascontiguousarray(rgb[y:y + size, x:x + size])
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([128 + 90 * np.sin(xx / 9.0), 128 + 90 * np.cos(yy / 13.0), 128 + 60 * np.sin((xx + yy) / 7.0)], -1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- BD-rate


def test_bd_rate_scaled_rates_gives_minus_20_percent() -> None:
    res = bd.bd_rate(RATES, PSNR, [r * 0.8 for r in RATES], PSNR, method="pchip")
    assert res.value == pytest.approx(-20.0, abs=0.1)
    assert res.overlap_lo == pytest.approx(25.10) and res.overlap_hi == pytest.approx(40.80)
    up = bd.bd_rate(RATES, PSNR, [r * 1.25 for r in RATES], PSNR, method="cubic")
    assert up.value == pytest.approx(25.0, abs=0.1)


def test_bd_rate_identical_curves_is_zero() -> None:
    assert bd.bd_rate(RATES, PSNR, RATES, PSNR).value == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_better_quality_at_same_rate_is_negative() -> None:
    assert bd.bd_rate(RATES, PSNR, RATES, [q + 1.0 for q in PSNR]).value < -5.0


def test_non_monotone_points_are_dropped() -> None:
    # Two targets clamped to the same lowest setting, and one quality dip.
    r, q = bd.monotone_points([0.17, 0.17, 0.25, 0.5, 0.6], [21.5, 21.5, 25.4, 29.4, 29.0])
    assert r == [0.17, 0.25, 0.5] and q == [21.5, 25.4, 29.4]
    assert bd.monotone_points([0.1, 0.2], [float("nan"), 30.0]) == ([0.2], [30.0])


def test_bd_rate_needs_enough_points() -> None:
    res = bd.bd_rate(RATES[:3], PSNR[:3], RATES[:3], PSNR[:3], method="cubic")
    assert math.isnan(res.value) and "points" in res.note


# ---------------------------------------------------------------- selection rule


def _trial(knob: float, b: float) -> ratematch.Trial:
    return ratematch.Trial(knob, b"", b, 0.0)


def test_choose_prefers_closest_within_band() -> None:
    trials = [_trial(10, 0.30), _trial(20, 0.44), _trial(25, 0.52), _trial(30, 0.70)]
    assert ratematch.choose(trials, 0.5, increasing=True).knob == 25


def test_choose_never_picks_above_band() -> None:
    trials = [_trial(10, 0.30), _trial(11, 0.90)]
    assert ratematch.choose(trials, 0.5, increasing=True).knob == 10
    # Decreasing knob (QP): the highest-quality point below the band is the lowest QP below it.
    trials = [_trial(40, 0.20), _trial(38, 0.30), _trial(37, 0.90)]
    assert ratematch.choose(trials, 0.5, increasing=False).knob == 38


def test_choose_falls_back_to_lowest_rate_when_everything_overshoots() -> None:
    trials = [_trial(1, 0.17), _trial(5, 0.25)]
    best = ratematch.choose(trials, 0.06, increasing=True)
    assert best.knob == 1 and not within_band(best.bpp, 0.06)


def _qp_codec(fail_below: int):
    """A QP-like knob (lower = more bits) whose encoder fails for QP < fail_below, like libvvenc on kodim13."""
    calls = []

    def encode(qp: float) -> bytes:
        calls.append(qp)
        if qp < fail_below:
            raise RuntimeError(f"encoder failed at QP {qp}")
        return bytes(int(4000 * 2 ** (-(qp - 4) / 6)))
    return encode, calls, codecs.Knob("qp", 4, 63, integer=True, increasing=False)


@pytest.mark.parametrize("fail_below", [4, 5, 6, 9])
def test_rate_matching_walks_past_a_failing_range_end(fail_below: int) -> None:
    encode, calls, knob = _qp_codec(fail_below)
    cache = ratematch.TrialCache(encode, 64, 64)
    m = ratematch.match_rate(cache, knob, 7.0)      # above every QP's rate: the top end is probed
    assert m.knob >= fail_below and sorted(cache.failed) == [q for q in (4, 5, 7, 11) if q < fail_below]   # 1, 2, 4 steps inward


def test_rate_matching_failure_past_the_retries_is_an_error() -> None:
    encode, _, knob = _qp_codec(40)
    with pytest.raises(RuntimeError):
        ratematch.match_rate(ratematch.TrialCache(encode, 64, 64), knob, 7.0)


# ---------------------------------------------------------------- rate matching with real encoders


@pytest.mark.parametrize("name", ["jpeg", "jpeg2000"])
@pytest.mark.parametrize("target", [0.5, 1.0])
def test_rate_matching_lands_in_band(name: str, target: float) -> None:
    codec = codecs.make(name)
    assert not codec.unavailable(), codec.unavailable()     # requirements.txt ships every anchor: missing = broken install
    rgb = _crop(192)
    h, w = rgb.shape[:2]
    cache = ratematch.TrialCache(lambda k: codec.encode(rgb, k), w, h)
    m = ratematch.match_rate(cache, codec.knob, target)
    assert m.bpp == pytest.approx(8 * len(m.data) / (w * h))
    assert m.within_band and within_band(m.bpp, target)
    assert m.bpp <= target * (1 + TOLERANCE)
    # The closest in-band trial was chosen.
    inside = [t for t in cache.trials.values() if within_band(t.bpp, target)]
    assert abs(m.bpp / target - 1) == pytest.approx(min(abs(t.bpp / target - 1) for t in inside))
    dec = codec.decode(m.data, h, w)
    assert dec.shape == rgb.shape and metrics.psnr_rgb(rgb, dec) > 20


@pytest.mark.parametrize("name", ["webp", "avif", "hevc", "vvc"])
def test_anchor_round_trip_odd_size(name: str) -> None:
    codec = codecs.make(name)
    assert not codec.unavailable(), codec.unavailable()     # requirements.txt ships every anchor: missing = broken install
    rgb = _crop(192)[:49, :65]  # odd sizes exercise the 4:2:0 padding
    k = codec.knob.hi - 0.3 * (codec.knob.hi - codec.knob.lo) if codec.knob.increasing else codec.knob.lo + 22
    dec = codec.decode(codec.encode(np.ascontiguousarray(rgb), round(k)), 49, 65)
    assert dec.shape == rgb.shape and metrics.psnr_rgb(rgb, dec) > 25


# ---------------------------------------------------------------- metrics


def test_luma_and_psnr_definitions() -> None:
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(metrics.luma(px)[0], [0.299 * 255, 0.587 * 255, 0.114 * 255])
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # MSE = 256 / 48
    assert metrics.psnr_rgb(a, b) == pytest.approx(10 * math.log10(255**2 / (256 / 48)))
    assert metrics.to_db(0.99) == pytest.approx(20.0)


def test_ms_ssim_small_images_are_nan() -> None:
    a = _crop(192)[:100, :100]
    assert math.isnan(metrics.ms_ssim_y(a, a))


# ---------------------------------------------------------------- summary


def _row(codec: str, image: str, target: float, b: float, ok: bool, q: float) -> dict:
    return {"codec": codec, "image": image, "target": target, "bpp": b, "within_band": ok, "psnr_rgb": q,
            "psnr_y": q + 1, "msssim_y": 0.9, "msssim_rgb": 0.8, "vmaf": 50.0, "enc_s": 0.01, "dec_s": 0.002,
            "calls": 3}


def test_summary_variance_and_compliance() -> None:
    bpps = [0.48, 0.52, 0.61]
    rows = [_row("jpeg", f"im{i}", 0.5, b, within_band(b, 0.5), 30 + i) for i, b in enumerate(bpps)]
    rows.append(_row("jpeg", "im0", 1.0, 1.0, True, 35))
    s = {(r["codec"], r["target"]): r for r in report.summarize(rows)}
    half = s[("jpeg", 0.5)]
    assert half["n"] == 3 and half["compliant"] == 2  # 0.61 is +22 %
    mean = sum(bpps) / 3
    assert half["var_bpp"] == pytest.approx(sum((b - mean) ** 2 for b in bpps) / 2)  # ddof=1
    assert half["mean_psnr_rgb"] == pytest.approx(31.0)
    assert half["mean_msssim_y_db"] == pytest.approx(10.0)
    assert half["med_enc_ms"] == pytest.approx(10.0)
    assert math.isnan(s[("jpeg", 1.0)]["var_bpp"])  # one image: no sample variance


def test_bd_table_against_anchor() -> None:
    rows = []
    for i, (r, q) in enumerate(zip(RATES, PSNR)):
        for codec, scale in (("jpeg2000", 1.0), ("webp", 0.8)):
            rows.append({**_row(codec, "a", [0.06, 0.12, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0][i], r * scale, True, q),
                         "msssim_y": 1 - 10 ** (-q / 20), "vmaf": 3 * q - 30})
    table = {t["codec"]: t for t in report.bd_table(report.summarize(rows), "jpeg2000")}
    assert table["webp"]["psnr_rgb_pchip"] == pytest.approx(-20.0, abs=0.1)
    assert table["webp"]["vmaf_pchip"] == pytest.approx(-20.0, abs=0.1)
    assert table["jpeg2000"]["msssim_y_db_pchip"] == pytest.approx(0.0, abs=1e-9)
    assert report.bd_table(report.summarize(rows), "vvc") == []


# ---------------------------------------------------------------- CLI: skips, cache, bad input


@pytest.fixture()
def tiny_dir(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(_crop(192)[:96, :128]).save(d / "a.png")
    return d


def test_missing_codecs_are_reported_not_silent(tiny_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "encoder.api", None)  # makes `from encoder.api import ...` fail
    monkeypatch.setattr(codecs.ffmpeg, "exe", lambda: None)  # as if imageio-ffmpeg were missing
    out = tmp_path / "out"
    rc = main([str(tiny_dir), "--out", str(out), "--codecs", "ours,jpeg,hevc", "--targets", "0.5", "--no-vmaf"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipping ours" in err and "skipping hevc" in err
    info = json.loads((out / "codecs.json").read_text())["codecs"]
    assert info["ours"]["available"] is False and "encoder.api" in info["ours"]["reason"]
    assert info["hevc"]["available"] is False and "ffmpeg" in info["hevc"]["reason"]
    assert info["jpeg"]["available"] is True
    rep = (out / "report.md").read_text()
    assert "## Skipped codecs" in rep and "**ours**" in rep and "**hevc**" in rep
    with (out / "per_image.csv").open() as fh:
        assert [r["codec"] for r in csv.DictReader(fh)] == ["jpeg"]


def test_with_reports_an_earlier_runs_codecs(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    """--with DIR adds the codecs this run did not compute from DIR/per_image.csv, rows unchanged, and refuses
    a folder that lacks some of this run's points."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert main([str(tiny_dir), "--out", str(first), "--codecs", "jpeg,jpeg2000", "--targets", "0.5,1",
                 "--no-vmaf"]) == 0
    assert main([str(tiny_dir), "--out", str(second), "--codecs", "jpeg2000", "--targets", "0.5,1", "--no-vmaf",
                 "--with", str(first)]) == 0
    rows = lambda d: {(r["codec"], r["image"], r["target"]): r["psnr_rgb"]  # noqa: E731
                      for r in csv.DictReader((d / "per_image.csv").open())}
    assert rows(second) == rows(first)
    assert "jpeg" in (second / "bd.md").read_text() and "--with" in (second / "report.md").read_text()
    capsys.readouterr()
    assert main([str(tiny_dir), "--out", str(second), "--codecs", "jpeg2000", "--targets", "0.25,0.5",
                 "--no-vmaf", "--with", str(first)]) == 2
    err = capsys.readouterr().err
    assert "--with: jpeg has 1 of the 2" in err and "evaluating" not in err      # refused before any work


@pytest.mark.slow
def test_results_are_cached_and_force_recomputes(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = [str(tiny_dir), "--out", str(out), "--codecs", "jpeg,jpeg2000", "--targets", "0.5,1", "--no-vmaf"]
    assert main(args) == 0
    assert "4 points computed, 0 from cache" in capsys.readouterr().out
    first = (out / "per_image.csv").read_text()
    assert len(list((out / "cache").rglob("*.json"))) == 4
    assert main(args) == 0
    assert "0 points computed, 4 from cache" in capsys.readouterr().out
    # Times aside, the cached run reproduces the table.
    strip = lambda text: [r[:10] for r in csv.reader(text.splitlines())]  # noqa: E731
    assert strip((out / "per_image.csv").read_text()) == strip(first)
    assert main(args + ["--force"]) == 0
    assert "4 points computed, 0 from cache" in capsys.readouterr().out
    assert (out / "summary.md").exists() and (out / "bd.md").exists() and (out / "rd_psnr_rgb.png").exists()


@pytest.mark.parametrize("case", ["missing", "empty", "bad_target"])
def test_bad_input_is_one_line_error(case: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {"missing": [str(tmp_path / "nope")], "empty": [str(empty)],
            "bad_target": [str(empty), "--targets", "0.3"]}[case]
    proc = subprocess.run([sys.executable, "-m", "evaluation", *args, "--out", str(tmp_path / "o")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("evaluation: error:")


def test_ours_plugin_path_with_a_stand_in_encoder(tiny_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """The `ours` plumbing (one rate-controlled call per target, decode, scoring) with a JPEG stand-in."""
    import io
    import types
    from dataclasses import dataclass

    @dataclass
    class Res:
        data: bytes
        bpp: float
        within_band: bool
        model: str = "stub"
        delta: float = 0.5
        probes: int = 2

    class Encoder:
        def __init__(self, registry=None, refine=0):
            self.registry = registry

        def encode(self, rgb, target):
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, "JPEG", quality=50)
            b = 8 * buf.tell() / (rgb.shape[0] * rgb.shape[1])
            return Res(buf.getvalue(), b, within_band(b, target))

    def decode_bytes(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    enc_mod, dec_mod = types.ModuleType("encoder.api"), types.ModuleType("decoder.api")
    enc_mod.Encoder, dec_mod.decode_bytes = Encoder, decode_bytes
    monkeypatch.setitem(sys.modules, "encoder.api", enc_mod)
    monkeypatch.setitem(sys.modules, "decoder.api", dec_mod)
    out = tmp_path / "out"
    assert main([str(tiny_dir), "--out", str(out), "--codecs", "ours", "--targets", "0.5,1", "--no-vmaf"]) == 0
    with (out / "per_image.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["codec"] for r in rows] == ["ours", "ours"]
    assert rows[0]["knob"] == "stub@0.5" and rows[0]["calls"] == "2"
    raw = Image.open(tiny_dir / "a.png")
    buf = io.BytesIO()
    raw.save(buf, "JPEG", quality=50)
    assert float(rows[0]["bpp"]) == pytest.approx(8 * buf.tell() / (raw.width * raw.height), rel=1e-5)
    assert float(rows[0]["psnr_rgb"]) > 25
