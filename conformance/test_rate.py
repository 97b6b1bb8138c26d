"""Rate check: judged from bytes on disk; unreachable pairs fail unless declared; the table is challenge-style."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.checks import rate as R
from conformance.conftest import check_of
from conformance.suite import StreamRec


def _stream(tmp_path, image: str, target: float, nbytes: int, w: int = 100, h: int = 80, status: str = "ok",
            **kw) -> StreamRec:
    p = tmp_path / f"{image}_{target}.bit"
    p.write_bytes(b"\x52" * nbytes)
    return StreamRec(image, image.split(".")[0], target, p, w, h, status, encoder_bpp=8 * nbytes / (w * h), **kw)


def test_in_band_stream_passes(tmp_path):
    s = _stream(tmp_path, "a.png", 0.25, 250)          # 8 * 250 / 8000 = 0.25 bpp exactly
    r = R.evaluate([s], [0.25], [])
    assert r.passed, r.failures
    assert r.figures["within_band"] == 1


def test_padded_stream_fails(tmp_path):
    """The check can fail: the same stream padded to +20 % on disk is out of band, and the report says where."""
    s = _stream(tmp_path, "a.png", 0.25, 250)
    s.path.write_bytes(s.path.read_bytes() + bytes(50))   # 300 bytes: 0.30 bpp, +20 %
    r = R.evaluate([s], [0.25], [])
    assert not r.passed
    msgs = [f.what for f in r.failures]
    assert any("+20.0 %" in m for m in msgs), msgs
    assert any("encoder produced 0.2500" in m for m in msgs), msgs   # disk differs from what was encoded
    assert all(f.image == "a.png" and f.target == 0.25 for f in r.failures)


def test_report_plots_every_stream(tmp_path):
    """report.md links rate.png, drawn from the per-stream figures (one in band, one padded out of it)."""
    from conformance import report
    a, b = _stream(tmp_path, "a.png", 0.25, 250), _stream(tmp_path, "b.png", 0.25, 300)
    r = R.evaluate([a, b], [0.25], [])
    report.write(tmp_path / "rep", {"command": "test"}, [r])
    assert (tmp_path / "rep" / "rate.png").stat().st_size > 1000
    assert "![rate](rate.png)" in (tmp_path / "rep" / "report.md").read_text()
    assert report.rate_plot([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_band_edges(tmp_path):
    ok = _stream(tmp_path, "a.png", 1.0, 1150, w=100, h=80)   # +15.0 % exactly: in band
    bad = _stream(tmp_path, "b.png", 1.0, 1151, w=100, h=80)  # +15.1 %
    r = R.evaluate([ok, bad], [1.0], [])
    assert [f.image for f in r.failures] == ["b.png"]


def test_unreachable_fails_unless_declared(tmp_path):
    s = _stream(tmp_path, "flat.png", 0.06, 100, status="unreachable", lo=0.1, hi=2.0)
    r = R.evaluate([s], [0.06], [])
    assert not r.passed and "not declared" in r.failures[0].what and "0.1000-2.0000" in r.failures[0].what
    ex = [R.Exclusion("flat", 0.06, "flat image", "x.yaml: entry 1")]
    r = R.evaluate([s], [0.06], ex)
    assert r.passed
    assert r.figures["excluded"] == 1 and r.figures["excluded_pairs"][0]["image"] == "flat.png"
    assert any(t.title.startswith("Declared exclusions") for t in r.tables)


def test_exclusion_does_not_excuse_a_reachable_miss(tmp_path):
    """Only the encoder's Unreachable can be excused; an in-range pair that misses the band is a bug."""
    s = _stream(tmp_path, "a.png", 0.25, 400)              # 0.40 bpp, status ok: encoder bug
    r = R.evaluate([s], [0.25], [R.Exclusion("a.png", None, "", "x.csv: row 1")])
    assert not r.passed


def test_stale_exclusions_are_noted(tmp_path):
    s = _stream(tmp_path, "a.png", 0.25, 250)
    r = R.evaluate([s], [0.25], [R.Exclusion("a.png", 0.25, "", "e.yaml: entry 1"),
                                 R.Exclusion("zzz", None, "", "e.yaml: entry 2")])
    assert r.passed
    assert any("not needed" in n for n in r.notes) and any("matched no" in n for n in r.notes)


def test_per_target_table_statistics(tmp_path):
    sizes = [240, 250, 262]
    streams = [_stream(tmp_path, f"i{k}.png", 0.25, n) for k, n in enumerate(sizes)]
    r = R.evaluate(streams, [0.25], [])
    row = r.tables[0].rows[0]
    bpps = [8 * n / 8000 for n in sizes]
    assert row[0] == "0.25" and row[1] == "3/3"
    assert row[2] == f"{np.mean(bpps):.4f}" and row[3] == f"{np.var(bpps, ddof=1):.3g}"
    devs = [(b / 0.25 - 1) * 100 for b in bpps]
    assert row[4] == f"{min(devs):+.2f}" and row[5] == f"{max(devs):+.2f}"


def test_exclusions_file_formats(tmp_path):
    y = tmp_path / "e.yaml"
    y.write_text("exclusions:\n  - {image: kodim05.png, target: 0.06, reason: flat}\n"
                 "  - {image: kodim01, target: all}\n")
    ex = R.load_exclusions(y)
    assert ex[0].matches("kodim05.png", 0.06) and not ex[0].matches("kodim05.png", 0.12)
    assert ex[1].matches("kodim01.png", 2.0) and ex[1].target is None
    c = tmp_path / "e.csv"
    c.write_text("# declared\nimage,target,reason\nkodim05.png,0.06,flat, really\n")
    ex = R.load_exclusions(c)
    assert ex[0].matches("kodim05.png", 0.06) and ex[0].reason == "flat, really"
    bad = tmp_path / "bad.csv"
    bad.write_text("kodim05.png,zero\n")
    with pytest.raises(R.ExclusionsError, match="not a number"):
        R.load_exclusions(bad)
    with pytest.raises(R.ExclusionsError, match="not found"):
        R.load_exclusions(tmp_path / "missing.yaml")


def test_suite_rate_fails_on_unreachable_and_passes_once_declared(suite_runs):
    """End to end through `python -m conformance`: the report names the pairs; declaring them makes it pass."""
    rate1 = check_of(suite_runs["rep1"], "rate")
    assert suite_runs["unreachable"], "tiny models should leave some pairs unreachable"
    assert suite_runs["rc1"] == 1 and not rate1["passed"]
    assert {(f["image"], f["target"]) for f in rate1["failures"]} == set(suite_runs["unreachable"])
    assert suite_runs["rc2"] == 0, check_of(suite_runs["rep2"], "rate")["failures"]
    rate2 = check_of(suite_runs["rep2"], "rate")
    assert rate2["passed"] and rate2["figures"]["excluded"] == len(suite_runs["unreachable"])
    md = (suite_runs["dir2"] / "report.md").read_text()
    assert "Declared exclusions" in md and "| target | within band | mean bpp | var bpp |" in md
    # bpp in the report is the file size on disk
    for p in rate2["figures"]["pairs"]:
        assert math.isclose(p["bpp"], 8 * p["bytes"] / _pixels(suite_runs, p["image"]))


def _pixels(suite_runs, image: str) -> int:
    from conformance.conftest import CROPS
    h, w = next((c[4], c[5]) for c in CROPS if c[0] == image)
    return h * w
