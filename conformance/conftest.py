"""Fixtures for `pytest conformance`: small Kodak crops and one shared suite run.

The tiny-model registry comes from the repository's root conftest.py, shared
with tests/ so a `make test` session builds it once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conformance.common import KODAK


def pytest_collection_modifyitems(items):
    """Tests on the whole suite's run (the suite_runs fixture) are slow: `make test` runs them, `make check` not."""
    for item in items:
        if "suite_runs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TARGETS = "0.06,0.25,0.5"
CONFIGS = ("t1-onednn0", "t1-onednn1-sse41-blas-prescott")   # the two most different; the CLI runs all five
# name, Kodak source, top, left, height, width: small, one of odd size (padding path)
CROPS = (("kodim23_crop.png", "kodim23.png", 100, 240, 128, 192), ("kodim05_crop.png", "kodim05.png", 200, 300, 64, 96),
         ("kodim13_odd.png", "kodim13.png", 0, 0, 37, 53))


@pytest.fixture(scope="session")
def crops_dir(tmp_path_factory) -> Path:
    from PIL import Image
    d = tmp_path_factory.mktemp("conf_crops")
    for name, src, y, x, h, w in CROPS:
        Image.open(KODAK / src).convert("RGB").crop((x, y, x + w, y + h)).save(d / name)
    return d


@pytest.fixture(scope="session")
def encoder(tiny_registry):
    from encoder.api import Encoder
    return Encoder(str(tiny_registry))


@pytest.fixture(scope="session")
def tiny_golden(tiny_registry, tmp_path_factory) -> Path:
    """Golden streams made by the tiny models, in a tmp folder (never the committed one)."""
    from conformance import golden as G
    d = tmp_path_factory.mktemp("conf_golden")
    G.generate(str(tiny_registry), d, KODAK)
    return d


@pytest.fixture(scope="session")
def suite_runs(tiny_registry, crops_dir, tiny_golden, tmp_path_factory) -> dict:
    """`python -m conformance --quick` (in-process main) on the crops, before and after declaring exclusions.

    First run: every check but robustness (which has its own tests), no exclusions; the tiny untrained models
    cannot reach some targets, so rate must fail and name those pairs. Second run: rate only, with those pairs
    declared; it must pass.
    """
    from conformance.__main__ import main
    base = tmp_path_factory.mktemp("conf_suite")
    common = [str(crops_dir), "--targets", TARGETS, "--registry", str(tiny_registry), "--no-progress"]
    r1 = base / "run1"
    rc1 = main(common + ["--quick", "--report", str(r1), "--golden-dir", str(tiny_golden),
                         "--checks", "rate,determinism,parity,golden", "--configs", ",".join(CONFIGS)])
    rep1 = json.loads((r1 / "report.json").read_text())
    rate = next(c for c in rep1["checks"] if c["name"] == "rate")
    unreachable = [(f["image"], f["target"]) for f in rate["failures"] if "unreachable" in f["what"]]
    excl = base / "exclusions.yaml"
    import yaml
    excl.write_text(yaml.safe_dump({"exclusions": [{"image": i, "target": t, "reason": "tiny untrained model"}
                                                   for i, t in unreachable]}))
    r2 = base / "run2"
    rc2 = main(common + ["--report", str(r2), "--checks", "rate", "--exclusions", str(excl)])
    rep2 = json.loads((r2 / "report.json").read_text())
    return {"rc1": rc1, "rep1": rep1, "dir1": r1, "rc2": rc2, "rep2": rep2, "dir2": r2, "unreachable": unreachable}


def check_of(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def kodak_crop(name: str = "kodim23.png", y: int = 100, x: int = 240, h: int = 128, w: int = 192) -> np.ndarray:
    from encoder.imageio import load_rgb8
    return np.ascontiguousarray(load_rgb8(KODAK / name)[y:y + h, x:x + w])
