"""Fixtures shared by tests/ and conformance/: tiny untrained models, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _build_tiny(out: Path, name: str, seed: int, targets: str, registry: Path, n: int, m: int) -> None:
    from training.export import main as export_main
    export_main(["--name", name, "--seed", str(seed), "--num-filters", str(n), "--latent-channels", str(m),
                 "--out-dir", str(out),
                 "--register", targets, "--registry", str(registry)])


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory) -> Path:
    """Two tiny models: 'lo' serves the four low targets, 'hi' the four high ones."""
    out = tmp_path_factory.mktemp("tiny_models")
    reg = out / "registry.yaml"
    _build_tiny(out, "lo", 1, "0.06,0.12,0.25,0.5", reg, 8, 8)
    _build_tiny(out, "hi", 2, "0.75,1.0,1.5,2.0", reg, 8, 16)
    return reg
