"""The project's own files: the Makefile passes its variables through, setup.cfg's install requirements match
the decoder's runtime, and pytest filters only the warnings it names."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

# --------------------------------------------------------------------------- make bench takes KODAK=

def test_make_bench_passes_kodak_through() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    r = subprocess.run([make, "-n", "bench", "KODAK=/some/kodak dir"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    bench = [l for l in r.stdout.splitlines() if "evaluation.bench" in l]
    assert bench and "--kodak" in bench[-1] and "/some/kodak dir" in bench[-1], r.stdout


# -------------------------------------------------------------- setup.cfg: install requirements and pytest's warning filters

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
