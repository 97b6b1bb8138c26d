"""The fuzz target runs, is reproducible, and reports a hang or a contract violation as a finding."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conformance.common import ROOT, child_env

import hypothesis  # noqa: F401,E402 - a hard requirement (requirements.txt): a missing fuzzer must fail, not skip


def _fuzz(args, tmp_path, timeout=240):
    return subprocess.run([sys.executable, "-m", "conformance.fuzz", "--out", str(tmp_path / "findings"), *args],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)


def test_short_fuzz_run(tiny_registry, tmp_path):
    r = _fuzz(["--registry", str(tiny_registry), "--examples", "30", "--seed", "1", "--timeout", "10"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "30 inputs" in r.stdout and "no finding" in r.stdout


def test_property_rejects_a_non_decodeerror(tiny_registry, tmp_path, monkeypatch):
    """The property itself: an exception other than DecodeError is a finding, and the input is saved."""
    from conformance import fuzz
    from decoder import decode as D
    t = fuzz.Target(str(tiny_registry), tmp_path, 10)
    t(b"")                                              # rejected: fine
    monkeypatch.setattr(D, "decode_bytes", lambda data, models: (_ for _ in ()).throw(IndexError("boom")))
    with pytest.raises(AssertionError, match="IndexError"):
        t(b"R" * 20)
    assert len(list(tmp_path.glob("fail-*.bit"))) == 1
