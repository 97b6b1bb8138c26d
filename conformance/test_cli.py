"""The CLI: help on every flag, one-line usage errors, and a full quick run's report files and exit status."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conformance.common import ROOT, child_env
from conformance.conftest import check_of

pytestmark = pytest.mark.slow      # whole-CLI / whole-suite runs: `make test`, not `make check`


def _cli(args):
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)


def test_help_documents_every_flag():
    from conformance.__main__ import build_parser
    p = build_parser()
    for a in p._actions:
        assert a.help, a.dest
    r = _cli(["--help"])
    assert r.returncode == 0 and "--exclusions" in r.stdout and "--quick" in r.stdout


def test_usage_errors_are_one_line(tmp_path):
    for args, needle in [([str(tmp_path / "nope")], "not a folder"),
                         ([str(tmp_path), "--targets", "abc"], "not a number"),
                         ([str(tmp_path), "--checks", "speed"], "unknown check"),
                         ([str(tmp_path), "--configs", "t9"], "unknown configuration"),
                         ([str(tmp_path)], "no images")]:
        r = _cli(args)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, r.stderr)


def test_bad_exclusions_file_is_a_usage_error(tmp_path, crops_dir):
    bad = tmp_path / "e.csv"
    bad.write_text("kodim05_crop.png\n")
    r = _cli([str(crops_dir), "--exclusions", str(bad)])
    assert r.returncode == 2 and "image,target" in r.stderr


def test_quick_run_reports(suite_runs):
    rep, d = suite_runs["rep1"], suite_runs["dir1"]
    assert [c["name"] for c in rep["checks"]] == ["rate", "determinism", "parity", "golden"]
    assert (d / "report.md").is_file() and (d / "report.json").is_file() and list((d / "streams").glob("*.bit"))
    md = (d / "report.md").read_text()
    assert md.startswith("# ratelock conformance: FAIL") and "## rate: FAIL" in md and "## golden: PASS" in md
    # only the undeclared unreachable pairs failed
    assert [c["name"] for c in rep["checks"] if not c["passed"]] == ["rate"]
    assert check_of(suite_runs["rep2"], "rate")["passed"] and suite_runs["rep2"]["passed"]
