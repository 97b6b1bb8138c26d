"""The accelerator runbook, dry-run on CPU: pack, train for a few seconds, import, export.

The same command the device runs (training/device.sh train), on the tiny config; what it
writes must fit what the device machine sends back (at most 8 files of 16 MiB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from evaluation.datasets import TRAIN  # noqa: E402
from tests.conftest import KODAK, ROOT, run_cli

pytestmark = pytest.mark.slow      # whole-CLI / whole-suite runs: `make test`, not `make check`


def test_pack_train_import_export_on_cpu(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in sorted(TRAIN.glob("bsd_*.jpg"))[:8]:
        Image.open(f).convert("RGB").resize((128, 96)).save(data / (f.stem + ".png"))
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    for f in sorted(KODAK.glob("*.png"))[:2]:
        Image.open(f).crop((0, 0, 128, 128)).save(kodak / f.name)
    pack = tmp_path / "pack"
    r = run_cli(["-m", "training.device_pack", "--config", "training/configs/tiny.yaml", "--set", f"train_dir={data}",
                 "--out", str(pack), "--kodak", str(kodak), "--runs-dir", str(tmp_path / "none"),
                 "--state-dir", str(tmp_path / "none"), "--no-progress"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "travels:" in r.stdout and len(list((pack / "train").glob("*.pack.webp"))) == 8
    out = tmp_path / "OUT"
    env = dict(os.environ, PACK=str(pack), OUT=str(out), PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run(["bash", "training/device.sh", "train", "training/configs/tiny.yaml", "6"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    files = [f for f in out.rglob("*") if f.is_file()]
    assert len(files) <= 8 and max(f.stat().st_size for f in files) <= 16 * 2 ** 20
    assert {"train.log", "curve.csv", "meta.json"} <= {f.name for f in files}
    meta = json.loads((out / "ckpt" / "meta.json").read_text())
    assert meta["step"] > 0 and meta["runs"][-1]["device"].endswith("(cpu)")
    assert len((out / "curve.csv").read_text().splitlines()) >= 3          # header, start, end
    # back here: import, then export through the codec and code an image with the unchanged CLIs
    r = run_cli(["-m", "training.checkpoint", "import", str(out), "--name", "tiny", "--runs-dir",
                 str(tmp_path / "runs"), "--state-dir", str(tmp_path / "state")])
    assert r.returncode == 0 and f"at step {meta['step']}" in r.stdout, r.stderr
    reg = tmp_path / "registry.yaml"
    r = run_cli(["-m", "training.export", "--state", str(tmp_path / "state" / "tiny.npz"), "--name", "tiny",
                 "--out-dir", str(tmp_path / "w"), "--register", "0.25", "--registry", str(reg)])
    assert r.returncode == 0, r.stderr
    img = data / sorted(p.name for p in data.iterdir())[0]
    r = run_cli(["-m", "encoder", str(img), "0.25", str(tmp_path / "o.bit"), "--registry", str(reg), "--best-effort"])
    assert (tmp_path / "o.bit").exists(), r.stderr
    r = run_cli(["-m", "decoder", str(tmp_path / "o.bit"), str(tmp_path / "o.png"), "--registry", str(reg)])
    assert r.returncode == 0, r.stderr
