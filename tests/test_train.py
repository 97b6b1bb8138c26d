"""Training works from a fresh clone: loss falls, it resumes, exports, and the export codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, run_cli

TRAIN = ROOT.parent / "shared" / "data" / "train"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train")
    for f in sorted(TRAIN.glob("bsd_*.jpg"))[:8]:
        Image.open(f).convert("RGB").resize((128, 96)).save(d / (f.stem + ".png"))
    return d


def _args(data: Path, tmp: Path, steps: int, extra: list[str] = ()) -> list[str]:
    sets = {"name": "t", "num_filters": 8, "latent_channels": 8, "patch": 64, "batch": 4, "steps": steps,
            "lr": 3e-3, "warmup_steps": 1, "clipnorm": 1.0, "train_dir": str(data), "validate_every": 1000,
            "checkpoint_every": 20, "val_crop": 64, "holdout_every": 4, "lmbda": 0.001}
    args = ["-m", "models.train", "--runs-dir", str(tmp / "runs"), "--state-dir", str(tmp / "state"),
            "--export-dir", str(tmp / "export"), "--log-every", "5", "--no-progress", *extra]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def _losses(log: Path) -> list[float]:
    return [float(m) for m in re.findall(r"step \d+ loss ([0-9.]+)", log.read_text())]


def test_train_resume_export_and_code(small_data, tmp_path):
    r = run_cli(_args(small_data, tmp_path, 40))
    assert r.returncode == 0, r.stderr[-2000:]
    log = tmp_path / "runs" / "t" / "train.log"
    losses = _losses(log)
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses      # the loss falls
    assert "coded_bpp_mean" in log.read_text()                 # real coded rate is measured
    # resume continues from the checkpoint instead of restarting
    r = run_cli(_args(small_data, tmp_path, 50))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed" in log.read_text() and len(_losses(log)) == 10
    # the export is a working codec
    export = tmp_path / "export"
    assert (export / "t.dec.npz").exists() and (export / "t.enc.npz").exists()
    from models.export import register
    reg = tmp_path / "registry.yaml"
    register(reg, export / "t", "t", [0.12], trained=True)
    img = small_data / sorted(p.name for p in small_data.iterdir())[0]
    r = run_cli(["-m", "encoder", str(img), "0.12", str(tmp_path / "o.bit"), "--registry", str(reg), "--best-effort"])
    assert (tmp_path / "o.bit").exists(), r.stderr
    r = run_cli(["-m", "decoder", str(tmp_path / "o.bit"), str(tmp_path / "o.png"), "--registry", str(reg)])
    assert r.returncode == 0 and Image.open(tmp_path / "o.png").size == (128, 96)


def test_distributed_path_on_two_logical_cpus(small_data, tmp_path):
    r = run_cli(_args(small_data, tmp_path, 6, ["--logical-cpus", "2", "--strategy", "mirrored", "--no-export"]))
    assert r.returncode == 0, r.stderr[-2000:]
    text = (tmp_path / "runs" / "t" / "train.log").read_text()
    assert "2 replica(s)" in text and "stopped at step 6" in text


def test_auto_rate_moves_target_toward_coded_rate():
    from models.validate import CodedStats, adjust
    too_high = CodedStats([0.6, 0.62, 0.58], [30, 30, 30])
    rt, beta, why = adjust(0.5, 100.0, 0.5, too_high)
    assert rt < 0.5 and beta == 100.0
    wide = CodedStats([0.2, 0.5, 0.8], [30, 30, 30])
    rt, beta, why = adjust(0.5, 100.0, 0.5, wide)
    assert beta == 200.0 and "spread" in why


def test_learning_rate_follows_schedule_inside_tf_function():
    """Regression: Keras froze a plain-callable learning rate at its step-0 warm-up value."""
    import tensorflow as tf
    from models.config import TrainConfig
    from models.train import StepSchedule
    cfg = TrainConfig(lr=1e-3, warmup_steps=100, steps=1000, lr_decay_at=[0.5])
    step = tf.Variable(0, dtype=tf.int64)
    opt = tf.keras.optimizers.Adam(learning_rate=StepSchedule(cfg, step))
    v = tf.Variable(1.0)

    @tf.function
    def train():
        with tf.GradientTape() as t:
            loss = v * v
        opt.apply_gradients([(t.gradient(loss, v), v)])
        return opt.learning_rate

    seen = []
    for s in (0, 99, 400, 600):
        step.assign(s)
        seen.append(float(train()))
    assert seen == pytest.approx([1e-5, 1e-3, 1e-3, 1e-4], rel=1e-5)


def test_sigterm_saves_state_and_stops(small_data, tmp_path):
    import os
    import subprocess
    import sys
    import time
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, *_args(small_data, tmp_path, 100000, ["--no-export"])], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "runs" / "t" / "train.log"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.exists() and "step 10 loss" in log.read_text()):
        time.sleep(1)
    proc.terminate()
    assert proc.wait(timeout=120) == 0
    text = log.read_text()
    assert "saved state at step" in text
    step = int(re.search(r"saved state at step (\d+)", text).group(1))
    meta = json.loads(str(np.load(tmp_path / "state" / "t.npz")["meta"]))
    assert step >= 10 and meta["step"] == step


def test_slim_state_reads_shared_tensors_from_its_export(tmp_path):
    """A slim state resumes to exactly the full state's weights, and refuses an export that changed."""
    from models import state
    from models.export import export
    from models.hyperprior import Hyperprior, Widths
    a = Hyperprior(Widths(8, 8))
    path = tmp_path / "t.npz"
    state.save(a, 7, path, {"name": "t"}, {"history": [{"step": 7}]})
    prefix = export(a, "t", out_dir=tmp_path / "w")
    before, after = state.slim(a, path, prefix)
    assert after < before
    b = Hyperprior(Widths(8, 8))
    meta = state.load(b, path)
    assert meta["step"] == 7 and meta["history"] == [{"step": 7}]
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy().astype(np.float16), wb.numpy().astype(np.float16))
    export(Hyperprior(Widths(8, 8)), "t", out_dir=tmp_path / "w")     # another model overwrites the export
    with pytest.raises(ValueError, match="no longer holds"):
        state.load(Hyperprior(Widths(8, 8)), path)
    # slimming against an export of different weights is refused too
    state.save(a, 7, path, {"name": "t"})
    with pytest.raises(ValueError, match="differs from the export"):
        state.slim(a, path, prefix)


def test_auto_rate_caps_beta():
    from models.validate import CodedStats, adjust
    wide = CodedStats([0.2, 0.5, 0.8], [30, 30, 30])
    assert adjust(0.5, 400.0, 0.5, wide, beta_max=800.0)[1] == 800.0
    assert adjust(0.5, 800.0, 0.5, wide, beta_max=800.0)[1] == 800.0
