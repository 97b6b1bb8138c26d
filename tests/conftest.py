"""Shared fixtures: tiny untrained models built at test time, so tests never need trained weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
from evaluation.datasets import KODAK  # noqa: E402

EXPECTED = Path(__file__).resolve().parent / "expected"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_addoption(parser):
    parser.addoption("--regen-expected", action="store_true",
                     help="rewrite tests/expected/* from the current code instead of comparing")


@pytest.fixture(scope="session")
def regen(request) -> bool:
    return request.config.getoption("--regen-expected")


@pytest.fixture(scope="session")
def encoder(tiny_registry):
    from encoder.api import Encoder
    return Encoder(str(tiny_registry))


def kodak_crop(name: str = "kodim23.png", h: int = 128, w: int = 192) -> np.ndarray:
    from encoder.imageio import load_rgb8
    img = load_rgb8(KODAK / name)
    return np.ascontiguousarray(img[:h, :w])


def run_cli(args: list[str], env_extra: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed CLI call (the contract of models.cli): no traceback, nothing else."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]
