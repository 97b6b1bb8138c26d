"""The JAX trainer works from a fresh clone: loss falls, it resumes, exports, the export codes, data parallel agrees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.datasets import TRAIN  # noqa: E402
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train")
    for f in sorted(TRAIN.glob("bsd_*.jpg"))[:8]:
        Image.open(f).convert("RGB").resize((128, 96)).save(d / (f.stem + ".png"))
    return d


def _args(data: Path, tmp: Path, steps: int, extra: list[str] = (), **over) -> list[str]:
    sets = {"name": "t", "num_filters": 8, "latent_channels": 8, "patch": 64, "batch": 4, "steps": steps,
            "lr": 3e-3, "warmup_steps": 1, "clipnorm": 1.0, "train_dir": str(data), "validate_every": 1000,
            "checkpoint_every": 20, "val_crop": 64, "holdout_every": 4, "lmbda": 0.001,
            "rate_probe": "estimated", **over}
    args = ["-m", "training.train", "--out", str(tmp / "runs" / "t"), "--state-dir", str(tmp / "state"),
            "--export-dir", str(tmp / "export"), "--log-every", "5", "--no-progress", "--kodak", "", *extra]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def _losses(log: Path) -> list[float]:
    return [float(m) for m in re.findall(r"step \d+ loss ([0-9.]+)", log.read_text())]


@pytest.mark.slow
def test_train_resume_export_and_code(small_data, tmp_path):
    r = run_cli(_args(small_data, tmp_path, 40, rate_probe="auto"))
    assert r.returncode == 0, r.stderr[-2000:]
    log = tmp_path / "runs" / "t" / "train.log"
    losses = _losses(log)
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses      # the loss falls
    assert '"probe": "coded"' in log.read_text()               # real coded rate is measured where TF is
    # resume continues from the checkpoint instead of restarting
    r = run_cli(_args(small_data, tmp_path, 50, rate_probe="auto"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed checkpoint" in log.read_text() and len(_losses(log)) == 10
    # the export is a working codec, through the unchanged CLIs
    export = tmp_path / "export"
    assert (export / "t.dec.npz").exists() and (export / "t.enc.npz").exists()
    from training.export import register
    reg = tmp_path / "registry.yaml"
    register(reg, export / "t", "t", [0.12], trained=True)
    img = small_data / sorted(p.name for p in small_data.iterdir())[0]
    r = run_cli(["-m", "encoder", str(img), "0.12", str(tmp_path / "o.bit"), "--registry", str(reg), "--best-effort"])
    assert (tmp_path / "o.bit").exists(), r.stderr
    r = run_cli(["-m", "decoder", str(tmp_path / "o.bit"), str(tmp_path / "o.png"), "--registry", str(reg)])
    assert r.returncode == 0 and Image.open(tmp_path / "o.png").size == (128, 96)


@pytest.mark.slow
def test_resume_from_checkpoint_equals_an_uninterrupted_run(small_data, tmp_path):
    """The full checkpoint carries everything: 10 + 10 steps give the losses of 20 steps in one go
    (to bf16 rounding of the Adam moments)."""
    one = tmp_path / "one"
    r = run_cli(_args(small_data, one, 20, ["--no-export", "--log-every", "2"], checkpoint_every=1000))
    assert r.returncode == 0, r.stderr[-2000:]
    two = tmp_path / "two"
    for _ in range(2):
        r = run_cli(_args(small_data, two, 20, ["--no-export", "--log-every", "2", "--max-steps", "10"],
                          checkpoint_every=1000))
        assert r.returncode == 0, r.stderr[-2000:]
    a, b = _losses(one / "runs" / "t" / "train.log"), _losses(two / "runs" / "t" / "train.log")
    assert len(a) == len(b) == 10
    np.testing.assert_allclose(b[:5], a[:5], rtol=1e-6)
    np.testing.assert_allclose(b[5:], a[5:], rtol=2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("first,second", [("tf", "jax"), ("jax", "tf")])
def test_a_run_resumed_across_backends_continues_its_loss_curve(small_data, tmp_path, first, second):
    """A checkpoint written by one backend (parameters and Adam moments) resumes in the other: the loss goes on
    from where it was instead of restarting, and lands where an unbroken run of the first backend does (the
    backends draw different crops and noise, so per-step losses differ; their means agree)."""
    def run(folder, backend, steps, extra=()):
        r = run_cli(_args(small_data, folder, 30, ["--no-export", "--log-every", "2", "--backend", backend,
                                                   "--max-steps", str(steps), *extra], checkpoint_every=1000))
        assert r.returncode == 0, r.stderr[-2000:]
        return folder / "runs" / "t" / "train.log"
    one = _losses(run(tmp_path / "one", first, 30))
    log = run(tmp_path / "two", first, 16)
    log = run(tmp_path / "two", second, 14)
    text = log.read_text()
    assert f"{second} backend on" in text and "resumed checkpoint" in text
    two = _losses(log)
    assert len(one) == len(two) == 15
    assert two[8] < 0.8 * two[0], two                          # the second half did not restart from scratch
    assert np.mean(two[-4:]) == pytest.approx(np.mean(one[-4:]), rel=0.15), (one, two)


@pytest.mark.slow
def test_data_parallel_on_two_devices_gives_the_single_device_loss(small_data, tmp_path):
    """Same seed, same crops: the batch split over 2 forced host devices computes the same loss."""
    logs = {}
    for n in (1, 2):
        d = tmp_path / f"d{n}"
        r = run_cli(_args(small_data, d, 6, ["--no-export", "--log-every", "1", "--backend", "jax"]),
                    env_extra={"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"})
        assert r.returncode == 0, r.stderr[-2000:]
        logs[n] = (d / "runs" / "t" / "train.log").read_text()
    assert "jax backend on 2 x cpu" in logs[2] and "jax backend on 1 x cpu" in logs[1]
    a, b = _losses_of(logs[1]), _losses_of(logs[2])
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-4)


def _losses_of(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"step \d+ loss ([0-9.]+)", text)]


def test_auto_rate_moves_target_toward_coded_rate():
    from training.validate import CodedStats, adjust
    too_high = CodedStats([0.6, 0.62, 0.58], [30, 30, 30])
    rt, beta, why = adjust(0.5, 100.0, 0.5, too_high)
    assert rt < 0.5 and beta == 100.0
    wide = CodedStats([0.2, 0.5, 0.8], [30, 30, 30])
    rt, beta, why = adjust(0.5, 100.0, 0.5, wide)
    assert beta == 200.0 and "spread" in why


def test_learning_rate_schedule():
    from training.config import TrainConfig
    from training.schedule import learning_rate
    cfg = TrainConfig(lr=1e-3, warmup_steps=100, steps=1000, lr_decay_at=[0.5, 0.9])
    seen = [float(learning_rate(cfg, s)) for s in (0, 99, 400, 600, 950)]
    assert seen == pytest.approx([1e-5, 1e-3, 1e-3, 1e-4, 1e-5], rel=1e-5)
    # Resumed at step 400 with fresh Adam moments: warm up again, by Adam's count; decays still by step.
    again = [float(learning_rate(cfg, s, c)) for s, c in ((400, 0), (449, 49), (450, 100), (600, 0))]
    assert again == pytest.approx([1e-5, 5e-4, 1e-3, 1e-6], rel=1e-5)


def test_config_coerces_yaml_strings():
    """YAML 1.1 reads 3e-4 as a string; the config declares a float."""
    from training.config import load
    cfg = load(None, ["lr=3e-4", "steps=1e3"])
    assert cfg.lr == 3e-4 and cfg.steps == 1000


@pytest.mark.slow
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
    ckpt = json.loads((tmp_path / "runs" / "t" / "ckpt" / "meta.json").read_text())
    assert ckpt["step"] == step and ckpt["runs"][-1]["to_step"] == step


@pytest.mark.slow
def test_max_seconds_stops_and_writes_the_curve(small_data, tmp_path):
    r = run_cli(_args(small_data, tmp_path, 100000, ["--no-export", "--max-seconds", "3", "--curve-seconds", "1",
                                                     "--kodak", str(small_data)]))
    assert r.returncode == 0, r.stderr[-2000:]
    curve = (tmp_path / "runs" / "t" / "curve.csv").read_text().splitlines()
    assert curve[0] == "device,seconds,step,kodak_est_bpp,kodak_psnr" and len(curve) >= 3
    assert float(curve[-1].split(",")[1]) < 30


@pytest.mark.slow
def test_slim_state_reads_shared_tensors_from_its_export(tmp_path):
    """A slim state resumes to exactly the full state's weights, and refuses an export that changed."""
    import jax

    from models import jax_transforms as J
    from training import state
    from training.export import export
    a = {k: np.asarray(v) for k, v in J.init(jax.random.PRNGKey(0), 8, 8).items()}
    path = tmp_path / "t.npz"
    cfg = {"name": "t", "num_filters": 8, "latent_channels": 8}
    state.save(a, 7, path, cfg, {"history": [{"step": 7}]})
    prefix = export(a, "t", out_dir=tmp_path / "w")
    before, after = state.slim(path, prefix)
    assert after < before
    b, meta = state.load(path)
    assert meta["step"] == 7 and meta["history"] == [{"step": 7}]
    for k in a:
        np.testing.assert_array_equal(a[k].astype(np.float16), b[k].astype(np.float16))
    other = {k: np.asarray(v) for k, v in J.init(jax.random.PRNGKey(1), 8, 8).items()}
    export(other, "t", out_dir=tmp_path / "w")                      # another model overwrites the export
    with pytest.raises(ValueError, match="no longer holds"):
        state.load(path)
    state.save(a, 7, path, cfg)                                     # slimming against another export: refused
    with pytest.raises(ValueError, match="differs from the export"):
        state.slim(path, prefix)


@pytest.mark.parametrize("name", ["base", "t006", "t050", "t200"])
def test_committed_states_convert_to_the_shipped_model_files(name, tmp_path):
    """The committed resume states load without TF and export to byte-identical model files (same bitstream)
    when they stand at the shipped model's step; a state the campaign has trained on since stands later."""
    import json

    from models.weights import file_hash, load_registry
    from training import state
    from training.export import export
    params, meta = state.load(ROOT / "models" / "checkpoints" / f"{name}.npz")
    info = {"trained": True, "step": meta["step"], "config": meta["config"]}
    prefix = export(params, name, info, tmp_path)
    shipped = ROOT / "models" / "weights" / f"{name}.dec.npz"
    with np.load(shipped) as f:
        shipped_step = json.loads(str(f["meta"]))["info"].get("step")
    if name != "base":
        assert name in {e.name for e in load_registry().entries}
    if shipped_step is not None and meta["step"] != shipped_step:
        assert meta["step"] > shipped_step      # moved on since its export (the base's always has)
    else:
        assert file_hash(f"{prefix}.dec.npz") == file_hash(shipped)
    with np.load(f"{prefix}.dec.npz") as ours, np.load(shipped) as theirs:
        assert sorted(ours.files) == sorted(theirs.files)


@pytest.mark.slow
def test_base_resumes_from_its_committed_state(tmp_path):
    """The committed base (step 20,203, N=128) resumes in JAX: a state copy advances by the steps run."""
    import shutil

    from training import state
    sd = tmp_path / "state"
    sd.mkdir()
    shutil.copy(ROOT / "models" / "checkpoints" / "base.npz", sd / "base.npz")
    step0 = state.read_meta(sd / "base.npz")["step"]
    r = run_cli(["-m", "training.train", "--config", str(ROOT / "training" / "configs" / "base.yaml"),
                 "--out", str(tmp_path / "run"), "--state-dir", str(sd), "--no-export", "--no-progress",
                 "--kodak", "", "--max-steps", "2", "--log-every", "1", "--set", "batch=2", "--set", "patch=64",
                 "--set", "rate_probe=estimated"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert state.read_meta(sd / "base.npz")["step"] == step0 + 2
    text = (tmp_path / "run" / "train.log").read_text()
    assert f"resumed committed state {sd / 'base.npz'} at step {step0}" in text


def test_checkpoint_files_fit_the_device_limit_and_round_trip(tmp_path):
    """A full-size model (N=128, M=192) with Adam moments: every file at most 16 MiB; parameters exact."""
    import jax
    import optax

    from models import jax_transforms as J
    from training import checkpoint
    params = J.init(jax.random.PRNGKey(0), 128, 192)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())
    opt_state = opt.init(params)
    opt_state = jax.tree_util.tree_map(lambda a: a + 1e-9 if a.dtype == np.float32 else a, opt_state)
    leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(opt_state)]
    checkpoint.save(tmp_path / "ckpt", {k: np.asarray(v) for k, v in params.items()}, leaves, {"step": 3})
    files = checkpoint.files(tmp_path / "ckpt")
    assert max(f.stat().st_size for f in files) <= 16 * 2 ** 20
    assert len(files) <= 6 and sum(f.stat().st_size for f in files) < 60 * 2 ** 20
    p, lv, meta = checkpoint.load(tmp_path / "ckpt")
    assert meta["step"] == 3
    for k, v in params.items():
        np.testing.assert_array_equal(p[k], np.asarray(v))
    for a, b in zip(lv, leaves):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-12)


def test_auto_rate_caps_beta():
    from training.validate import CodedStats, adjust
    wide = CodedStats([0.2, 0.5, 0.8], [30, 30, 30])
    assert adjust(0.5, 400.0, 0.5, wide, beta_max=800.0)[1] == 800.0
    assert adjust(0.5, 800.0, 0.5, wide, beta_max=800.0)[1] == 800.0


def test_place_puts_back_a_checkpoints_optimiser_leaves():
    """Trainer.place(params, leaves), the resume and the non-finite restore: Adam's state as the checkpoint
    flattened it, on the devices again; without leaves, a fresh Adam."""
    import jax

    from models import jax_transforms as J
    from training.config import TrainConfig
    from training.jax_step import Trainer
    trainer = Trainer(TrainConfig(num_filters=8, latent_channels=8, batch=1, patch=64),
                      (np.zeros(64 * 64 * 3, np.uint8), np.zeros(1, np.int64), np.full(1, 64), np.full(1, 64)))
    params = {k: np.asarray(v) for k, v in J.init(jax.random.PRNGKey(0), 8, 8).items()}
    _, fresh = trainer.place(params)
    leaves = [np.asarray(a) + (0.5 if np.asarray(a).dtype == np.float32 else 0) for a in jax.tree_util.tree_leaves(fresh)]
    placed, opt_state = trainer.place(params, leaves)
    assert jax.tree_util.tree_structure(opt_state) == jax.tree_util.tree_structure(fresh)
    for a, b in zip(jax.tree_util.tree_leaves(opt_state), leaves):
        np.testing.assert_array_equal(np.asarray(a), b)
    for k, v in params.items():
        np.testing.assert_array_equal(np.asarray(placed[k]), v)
