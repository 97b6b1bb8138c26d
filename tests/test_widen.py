"""Widening (training/widen.py): step 0 of the wide model codes what the narrow one codes, it can learn,
training resumes from it at the new width on both backends, and the codec takes the width it declares."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("jax")
import tensorflow as tf  # noqa: E402

from evaluation.datasets import TRAIN  # noqa: E402
from models import jax_transforms as J  # noqa: E402
from models import network  # noqa: E402
from models import tf_network as T  # noqa: E402
from tests.conftest import ROOT, kodak_crop  # noqa: E402
from training import state  # noqa: E402
from training import tf_step as TS  # noqa: E402
from training import widen as W  # noqa: E402

T200 = ROOT / "models" / "checkpoints" / "t200.npz"
NARROW, WIDE = (128, 192), (192, 320)
# Step 0 against the narrow model: reconstruction to float tolerance; rate within RATE_TOL bpp. The new latents
# and z channels round to 0 at the scale table's floor and a narrow prior: ~3e-6 bpp measured (2026-12-03).
X_TOL, RATE_TOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def t200(tmp_path_factory) -> tuple[dict, dict]:
    """(narrow, wide) parameters of t200; the wide ones through the state file (fp16), as training reads them."""
    if not T200.exists():
        pytest.skip("no t200 state")
    d = tmp_path_factory.mktemp("widen")
    shutil.copy(T200, d / "t200.npz")             # the campaign may rewrite its state meanwhile
    W.widen_state(d / "t200.npz", d / "t200w.npz", *WIDE)
    narrow, meta = state.load(d / "t200.npz")
    if network.widths_of(narrow) != NARROW:
        pytest.skip("t200 is no longer N=128 M=192")
    return narrow, state.load(d / "t200w.npz")[0]


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Three real 192-px crops from the training photographs."""
    from training.data import center_crop, list_images, load_rgb
    files = list_images(TRAIN)[::211][:3]
    return [center_crop(load_rgb(f), 192)[None].astype(np.float32) / 255.0 for f in files]


def _evaluate(p: dict, x: np.ndarray) -> dict:
    """The TF training backend's evaluation: rounded latents, their discrete likelihoods, the float synthesis."""
    out = TS.forward(p, tf.constant(x))
    return {k: out[k].numpy() for k in ("bpp", "mse", "x_hat")}


def _gap(a: dict, b: dict) -> tuple[float, float, float]:
    """(max |x_hat difference|, relative MSE difference, bpp difference)."""
    return (float(np.abs(b["x_hat"] - a["x_hat"]).max()), abs(float(b["mse"]) / float(a["mse"]) - 1),
            float(b["bpp"] - a["bpp"]))


def test_step0_codes_what_the_narrow_model_codes(t200, crops):
    narrow, wide = t200
    assert network.widths_of(wide) == WIDE
    for x in crops:
        dx, dmse, dbpp = _gap(_evaluate(narrow, x), _evaluate(wide, x))
        assert dx <= X_TOL and dmse <= 1e-6 and abs(dbpp) <= RATE_TOL, (dx, dmse, dbpp)
        y = T.apply(wide, "analysis", x).numpy()
        assert np.abs(y[..., NARROW[1]:]).max() < 0.35          # the new latents round to 0, with room to spare


def test_a_naive_widening_fails_the_same_check(t200, crops, monkeypatch):
    """Random outgoing weights change the reconstruction; full-size incoming weights (zero outgoing) keep it
    but cost bits: both fail the check above, so it can tell."""
    narrow, _ = t200
    x = crops[0]
    a = _evaluate(narrow, x)
    loud = _gap(a, _evaluate(W.widen(narrow, *WIDE, init_scale=1.0), x))
    assert loud[0] <= X_TOL and loud[2] > 100 * RATE_TOL, loud

    def random_outgoing(w, shape, ip, op, rng, scale, quiet_out=None):
        out = rng.uniform(-1, 1, shape).astype(np.float32) * np.sqrt(6.0 / (shape[0] * shape[1] * sum(shape[2:])))
        out[np.ix_(np.arange(shape[0]), np.arange(shape[1]), ip, op)] = w
        return out
    monkeypatch.setattr(W, "_widen_kernel", random_outgoing)
    naive = _gap(a, _evaluate(W.widen(narrow, *WIDE, init_scale=1.0), x))
    assert naive[0] > 0.05 and naive[1] > 0.05, naive


def test_new_gdn_couplings_are_zero_in_value(t200):
    """gamma[new in, old out] is stored at sqrt(pedestal) = 2^-18 (exact in fp16): value exactly 0, both backends."""
    _, wide = t200
    n = NARROW[0]
    for key in (k for k in wide if k.endswith("reparam_gamma")):
        for value in (T._gdn_value(tf.constant(wide[key]), 0.0).numpy(), np.asarray(J._gdn_value(wide[key], 0.0))):
            assert np.all(value[n:, :n] == 0), key
            assert np.all(np.diag(value)[n:] == pytest.approx(0.1, rel=1e-3)), key     # fp16


def _ste_gradient(p: dict, x: np.ndarray, key: str) -> np.ndarray:
    """d(MSE + 100 bpp)/d p[key] at step 0 under straight-through rounding (t200's quantisation)."""
    v = {k: tf.Variable(a) for k, a in p.items()}
    rng = np.random.default_rng(0)
    h, w = x.shape[1:3]
    n, m = network.widths_of(p)
    noise = (rng.uniform(-0.5, 0.5, (1, h // 64, w // 64, n)).astype(np.float32),
             rng.uniform(-0.5, 0.5, (1, h // 16, w // 16, m)).astype(np.float32))
    with tf.GradientTape() as tape:
        out = TS.forward(v, tf.constant(x), tuple(map(tf.constant, noise)), "ste")
        loss = out["mse"] + 100.0 * out["bpp"]
    return tape.gradient(loss, v[key]).numpy()


def test_new_latents_get_gradient_under_ste_because_their_mu_is_not_zero(t200, crops):
    """y_hat = mu + round(y - mu) is mu for a new latent: the synthesis weights out of it learn only if mu != 0."""
    _, wide = t200
    m = NARROW[1]
    x = crops[0][:, :128, :128]
    key = "synthesis/deconv_0/kernel"                         # (5, 5, out, in): in = the latents
    assert np.abs(_ste_gradient(wide, x, key)[..., m:]).max() > 1e-6
    dead = dict(wide)
    k = wide["hyper_synthesis/conv_2/kernel"].copy()
    k[..., m:WIDE[1]] = 0.0                                   # the new mu at exactly 0
    dead["hyper_synthesis/conv_2/kernel"] = k
    assert np.abs(_ste_gradient(dead, x, key)[..., m:]).max() == 0.0


def test_widening_refuses_to_narrow_and_the_cli_says_so_in_one_line(tmp_path, capsys):
    p = {k: np.asarray(v) for k, v in J.init(__import__("jax").random.PRNGKey(0), 8, 8).items()}
    with pytest.raises(ValueError, match="widths only grow"):
        W.widen(p, 4, 8)
    assert W.main([str(tmp_path / "missing.npz"), str(tmp_path / "out.npz"), "--num-filters", "12",
                   "--latent-channels", "16"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m training.widen: error:") and "Traceback" not in err[0]


# -- training resumes at the new width; the codec takes it -----------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(training images, narrow tiny state 8 x 8 at step 5, its widening to 12 x 16 as state 'w')."""
    from training.config import TrainConfig
    d = tmp_path_factory.mktemp("tiny_widen")
    data = d / "data"
    data.mkdir()
    for f in sorted(TRAIN.glob("bsd_*.jpg"))[:8]:
        Image.open(f).convert("RGB").resize((128, 96)).save(data / (f.stem + ".png"))
    import jax
    p = {k: np.asarray(v) for k, v in J.init(jax.random.PRNGKey(1), 8, 8).items()}
    for key, gain in (("analysis/conv_3/kernel", 6.0), ("hyper_analysis/conv_2/kernel", 10.0)):
        p[key] = p[key] * gain         # y and z of a few units, as trained: non-zero symbols, yet no escapes
    cfg = TrainConfig(name="n", num_filters=8, latent_channels=8).__dict__
    state.save(p, 5, d / "n.npz", cfg, {"train_target": 0.4, "beta": 50.0, "history": []})
    assert W.main([str(d / "n.npz"), str(d / "states" / "w.npz"), "--num-filters", "12", "--latent-channels", "16"]) == 0
    return data, d / "n.npz", d / "states" / "w.npz"


def _train(data: Path, out: Path, backend: str, sets: dict, state_dir: Path | str = "") -> str:
    """3 steps of training.train in this process (its SIGTERM/SIGINT handlers are put back afterwards)."""
    import signal

    from training import train
    over = {"name": "w", "num_filters": 12, "latent_channels": 16, "patch": 64, "batch": 1, "steps": 1000,
            "train_dir": str(data), "validate_every": 1000, "val_crop": 64, "holdout_every": 4,
            "rate_probe": "estimated", "quantization": "ste", **sets}
    argv = ["--out", str(out), "--state-dir", str(state_dir), "--no-export", "--no-progress", "--kodak", "",
            "--backend", backend, "--max-steps", "3", "--log-every", "1"]
    for k, v in over.items():
        argv += ["--set", f"{k}={v}"]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert train.main(argv) == 0
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return (out / "train.log").read_text()


def test_training_resumes_a_widened_state_at_the_new_width_on_tf(tiny, tmp_path):
    data, _, wide = tiny
    states = tmp_path / "states"
    shutil.copytree(wide.parent, states)
    log = _train(data, tmp_path / "run", "tf", {}, states)
    assert "resumed committed state" in log and "at step 5" in log and "tf backend on" in log
    params, meta = state.load(states / "w.npz")
    assert network.widths_of(params) == (12, 16) and meta["step"] == 8
    assert meta["lineage"][0]["widened"] == {"from": [8, 8], "to": [12, 16], "seed": 0, "init_scale": W.INIT_SCALE}
    with pytest.raises(ValueError, match="holds N=12 M=16, the config says N=8 M=8"):
        _train(data, tmp_path / "run2", "tf", {"num_filters": 8, "latent_channels": 8}, states)


@pytest.mark.slow
def test_training_widens_its_init_from_on_jax(tiny, tmp_path):
    data, narrow, _ = tiny
    log = _train(data, tmp_path / "run", "jax", {"init_from": str(narrow), "init_widen": True}, tmp_path / "s")
    assert "widened to N=12 M=16" in log and "jax backend on" in log
    params, meta = state.load(tmp_path / "s" / "w.npz")
    assert network.widths_of(params) == (12, 16) and meta["step"] == 8 and meta["train_target"] == 0.4
    with pytest.raises(ValueError, match="init_widen: true widens a narrower parent"):
        _train(data, tmp_path / "run2", "jax", {"init_from": str(narrow)}, "")


@pytest.mark.slow
def test_the_codec_takes_the_width_a_model_file_declares(tiny, tmp_path):
    """Exported, registered, encoded and decoded through the codec's APIs; the new channels code only zeros.
    (One export: tfc's z-table tails cost ~10 s a model here. The narrow model's stream is the same bytes where
    it stays within its escape budget, which grows with the symbol count: docs/findings.md.)"""
    from decoder import decode as D
    from decoder.api import decode_bytes
    from encoder.api import Encoder
    from training.export import export, register
    _, _, wide = tiny
    params, _ = state.load(wide)
    prefix = export(params, "w", {"trained": False}, tmp_path)
    meta = json.loads(str(np.load(f"{prefix}.dec.npz")["meta"]))
    assert meta["widths"] == {"num_filters": 12, "latent_channels": 16}
    reg = tmp_path / "registry.yaml"
    register(reg, prefix, "w", [2.0], trained=False)
    img = kodak_crop(h=128, w=192)
    enc = Encoder(str(reg))
    data = enc.encode_fixed(img, 0, 128)
    out = decode_bytes(data, str(reg))
    assert out.shape == img.shape
    assert np.array_equal(out, enc.models.encoder_model(enc.models.distinct_entries()[0]).analyse(img)
                          ._reconstruct(128))
    parsed = D.parse(data, D.ModelCache(str(reg)))
    assert np.any(parsed.symbols[..., :8]) and not np.any(parsed.symbols[..., 8:]) and not np.any(parsed.z_hat[..., 8:])


def test_the_integer_hyper_synthesis_of_the_wide_t200_keeps_the_narrow_integers(t200):
    """models/intnet at N=192, M=320: the same per-layer scales, identical mu and log2 sigma (Q8) for the old
    latents, and for the new ones sigma at the table's floor (scale index 0) and a mu of a few 1/256."""
    from models import intnet
    from models import scale_table as S
    from training.export import hyper_synthesis_layers
    narrow, wide = t200
    a, b = intnet.from_float(hyper_synthesis_layers(narrow)), intnet.from_float(hyper_synthesis_layers(wide))
    assert [(l.w_frac, l.in_frac, l.out_frac) for l in a.layers] == [(l.w_frac, l.in_frac, l.out_frac) for l in b.layers]
    z = np.random.default_rng(0).integers(-6, 7, (6, 8, NARROW[0]))
    zw = np.concatenate([z, np.zeros((6, 8, WIDE[0] - NARROW[0]), z.dtype)], axis=-1)
    (mu_a, sig_a), (mu_b, sig_b) = a.run(z), b.run(zw)
    m = NARROW[1]
    assert np.array_equal(mu_b[..., :m], mu_a) and np.array_equal(sig_b[..., :m], sig_a)
    assert np.all(sig_b[..., m:] == S.LOG2_MIN_Q) and np.abs(mu_b[..., m:]).max() < 64


def test_the_device_pack_of_a_widening_run_carries_the_widened_parent(tiny, tmp_path):
    """A fine-tune's first trip packs its parent as the resume state; with init_widen, the parent widened."""
    from training import device_pack
    data, narrow, _ = tiny
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"name: w\nnum_filters: 12\nlatent_channels: 16\ninit_from: {narrow}\ninit_widen: true\n"
                   f"train_dir: {data}\n")
    assert device_pack.main(["--config", str(cfg), "--out", str(tmp_path / "pack"), "--kodak", "", "--limit", "2",
                             "--runs-dir", str(tmp_path / "runs"), "--state-dir", str(tmp_path / "none"),
                             "--no-progress"]) == 0
    params, meta = state.load(tmp_path / "pack" / "state" / "w.npz")
    assert network.widths_of(params) == (12, 16) and meta["step"] == 5 and meta["lineage"][0]["widened"]["to"] == [12, 16]


def test_a_branch_goes_on_from_its_parents_step_and_rate_target_at_its_own_delta_range(tiny, tmp_path):
    """init_continue (e.g. t200d, t200 trained across quantiser steps) continues the parent's step count, R_t and
    beta, as a widening does, and records the branch in the lineage."""
    data, narrow, _ = tiny
    log = _train(data, tmp_path / "run", "tf", {"name": "b", "num_filters": 8, "latent_channels": 8,
                                                  "init_from": str(narrow), "init_continue": True,
                                                  "delta_range": "[0.7,1.4]"}, tmp_path / "s")
    assert "its step, R_t and beta go on" in log
    _, meta = state.load(tmp_path / "s" / "b.npz")
    assert meta["step"] == 8 and meta["train_target"] == 0.4 and meta["beta"] == 50.0
    assert meta["lineage"][0]["branched"] is True and meta["config"]["delta_range"] == [0.7, 1.4]


def test_a_run_folder_behind_the_committed_state_resumes_the_state(tiny, tmp_path):
    """A model trained on from another runs folder (an A/B's control) must not go back to an older checkpoint."""
    data, narrow, _ = tiny
    states = tmp_path / "s"
    states.mkdir()
    shutil.copy(narrow, states / "n.npz")
    sets = {"name": "n", "num_filters": 8, "latent_channels": 8}
    _train(data, tmp_path / "main", "tf", sets, states)                        # 5 -> 8, main/ckpt at 8
    _train(data, tmp_path / "ab", "tf", sets, states)                          # 8 -> 11 elsewhere
    log = _train(data, tmp_path / "main", "tf", sets, states)                  # back in main: 11 -> 14
    assert "is behind the committed state" in log
    assert state.load(states / "n.npz")[1]["step"] == 14
