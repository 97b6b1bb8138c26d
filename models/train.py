"""Train one per-target model: python -m models.train --config models/configs/<name>.yaml

Resumes from runs/<name>/ (full optimiser state) or, on a fresh clone, from the
committed resume state models/checkpoints/<name>.npz (weights + step; Adam's
moments restart, which costs a few hundred steps of warm-up, not a restart).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

import numpy as np

from models.state import load as load_state, save as save_state

ROOT = Path(__file__).resolve().parent.parent


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from models.config import TrainConfig
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="config keys:\n" + TrainConfig.help_text())
    p.add_argument("--config", help="YAML config (layered with `inherit:`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key; repeatable")
    p.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many steps in this invocation (0 = run to config.steps)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs"), help="where checkpoints and logs go")
    p.add_argument("--state-dir", default=str(ROOT / "models" / "checkpoints"),
                   help="where the committed resume state (fp16 weights + step) is written")
    p.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker"], default="auto",
                   help="tf.distribute strategy; auto = mirrored when more than one device is visible")
    p.add_argument("--logical-cpus", type=int, default=0,
                   help="split the CPU into this many logical devices (tests the distributed path)")
    p.add_argument("--no-export", action="store_true", help="do not export to the registry format at the end")
    p.add_argument("--export-dir", default=str(ROOT / "models" / "weights"), help="where exports are written")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-every", type=int, default=500, help="steps between plain-log lines")
    return p.parse_args(argv)


def _strategy(kind: str, logical_cpus: int):
    import tensorflow as tf
    if logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if kind == "mirrored" or (kind == "auto" and len(devices) > 1):
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


class StepSchedule:
    """Warm-up then 10x drops, driven by our step counter, not the optimiser's.

    A schedule object (not a plain callable) is required: Keras 2.14's optimiser
    evaluates a plain callable once and freezes it (measured here: the first
    1,250 steps of the base model ran at the step-0 warm-up rate, 6e-7). Our own
    counter also survives a resume from the committed state, where Adam's
    iteration count restarts at 0.
    """

    def __new__(cls, cfg, step_var):
        import tensorflow as tf

        class _Schedule(tf.keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, _):
                s = tf.cast(step_var, tf.float32)
                lr = cfg.lr * tf.minimum(1.0, (s + 1) / max(1, cfg.warmup_steps))
                for frac in cfg.lr_decay_at:
                    lr = tf.where(s >= frac * cfg.steps, lr * 0.1, lr)
                return lr

            def get_config(self):
                return {}
        return _Schedule()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from models import config as C
    cfg = C.load(args.config, args.set)

    import tensorflow as tf
    from models.data import CropSampler, dataset, list_images, split_holdout
    from models.hyperprior import Hyperprior, LossConfig, Widths

    tf.config.experimental.enable_tensor_float_32_execution(False)
    tf.random.set_seed(cfg.seed)
    run_dir = Path(args.runs_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("train")
    log.setLevel(logging.INFO)
    fh = logging.FileHandler(run_dir / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(fh)
    log.info("config %s", json.dumps(cfg.__dict__))

    strategy = _strategy(args.strategy, args.logical_cpus)
    files = list_images(cfg.train_dir)
    train_files, val_files = split_holdout(files, cfg.holdout_every)
    log.info("data: %d train, %d held out; %d replica(s)", len(train_files), len(val_files),
             strategy.num_replicas_in_sync)
    sampler = CropSampler(train_files, cfg.patch, cfg.seed, progress=not args.no_progress)
    ds = strategy.experimental_distribute_dataset(dataset(sampler, cfg.batch))

    # Plain (non-mirrored) variables: read by every replica, written only between steps.
    # R_t and beta are variables, not constants, so the auto-rate loop can steer a traced step.
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    rt_var = tf.Variable(cfg.target_bpp, dtype=tf.float32, trainable=False, name="train_target")
    beta_var = tf.Variable(cfg.beta, dtype=tf.float32, trainable=False, name="beta")
    with strategy.scope():
        model = Hyperprior(Widths(cfg.num_filters, cfg.latent_channels), cfg.quantization)

        opt_kw = {"global_clipnorm": cfg.clipnorm} if cfg.clipnorm else {}
        optimizer = tf.keras.optimizers.Adam(learning_rate=StepSchedule(cfg, step_var), **opt_kw)
    loss_cfg = LossConfig(kind=cfg.loss, lmbda=cfg.lmbda, beta=beta_var, target_bpp=rt_var,
                          mse_weight=cfg.mse_weight, msssim_weight=cfg.msssim_weight)

    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var, rt=rt_var, beta=beta_var)
    manager = tf.train.CheckpointManager(ckpt, run_dir / "ckpt", max_to_keep=2)
    state_path = Path(args.state_dir) / f"{cfg.name}.npz"
    history: list[dict] = []
    lineage: list[dict] = []   # the states this run was initialised from, nearest first (for the model card)
    if state_path.exists():
        meta = load_state(model, state_path)
        step_var.assign(meta["step"])
        history = meta.get("history", [])
        lineage = meta.get("lineage", [])
        rt_var.assign(meta.get("train_target", cfg.target_bpp))
        beta_var.assign(meta.get("beta", cfg.beta))
        log.info("resumed committed state %s at step %d", state_path, int(step_var))
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        log.info("resumed %s at step %d", manager.latest_checkpoint, int(step_var))
    elif not state_path.exists() and cfg.init_from:
        parent = load_state(model, ROOT / cfg.init_from)
        lineage = [{"name": parent["config"]["name"], "state": cfg.init_from, "step": parent["step"],
                    "wall_seconds": parent.get("wall_seconds", 0.0)}] + parent.get("lineage", [])
        log.info("initialised from %s", cfg.init_from)
    wall = {"seconds": float(history[-1].get("wall_seconds", 0.0)) if history else 0.0}

    replicas = strategy.num_replicas_in_sync

    @tf.function
    def train_step(x):
        def one(xs):
            with tf.GradientTape() as tape:
                out = model(xs, training=True)
                loss = loss_cfg.loss(out, xs)
                scaled = loss / replicas
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss, out["bpp"], out["mse"]
        per = strategy.run(one, args=(x,))
        return [strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for v in per]

    val_uint8 = [_center_crop(f, cfg.val_crop) for f in val_files]

    def validate(step: int) -> dict:
        from models.validate import adjust, coded_stats
        bpps = []
        for img in val_uint8:
            out = model(tf.constant(img[None].astype(np.float32) / 255.0), training=False)
            bpps.append(float(out["bpp"]))
        stats = coded_stats(model, val_uint8)
        res = {"step": step, "val_est_bpp": float(np.mean(bpps)), **stats.as_dict(),
               "train_target": float(rt_var.numpy()), "beta": float(beta_var.numpy()),
               "wall_seconds": round(wall["seconds"] + time.time() - t0, 1)}
        if cfg.auto_rate and cfg.loss == "guerin":
            new_rt, new_beta, why = adjust(float(rt_var.numpy()), float(beta_var.numpy()), cfg.target_bpp, stats,
                                           beta_max=cfg.beta_max)
            rt_var.assign(new_rt)
            beta_var.assign(new_beta)
            res["adjust"] = f"{why}: R_t -> {new_rt:.4f}, beta -> {new_beta:.1f}"
        history.append(res)
        log.info("validate %s", json.dumps(res))
        return res

    def state_extra() -> dict:
        return {"history": history, "lineage": lineage, "train_target": float(rt_var.numpy()),
                "beta": float(beta_var.numpy()), "wall_seconds": round(wall["seconds"] + time.time() - t0, 1)}

    writer = tf.summary.create_file_writer(str(run_dir / "tb"))
    end = cfg.steps if not args.max_steps else min(cfg.steps, int(step_var) + args.max_steps)
    from tqdm import tqdm
    bar = tqdm(total=end, initial=int(step_var), desc=cfg.name, unit="step", disable=args.no_progress,
               mininterval=5)
    it = iter(ds)
    t0, s0 = time.time(), int(step_var)
    ema, window = None, []
    stop = {"signal": None}

    def _on_signal(signum, _frame):  # finish the step, save, exit: background runs die with sessions
        stop["signal"] = signum
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    while int(step_var) < end:
        if stop["signal"] is not None:
            manager.save(checkpoint_number=int(step_var))
            save_state(model, int(step_var), state_path, cfg.__dict__, state_extra())
            log.info("signal %d: saved state at step %d and stopped", stop["signal"], int(step_var))
            break
        loss, bpp, mse = train_step(next(it))
        step_var.assign_add(1)
        step = int(step_var)
        vals = np.array([float(loss), float(bpp), float(mse)])
        if not np.all(np.isfinite(vals)):
            log.info("non-finite loss at step %d; restoring last checkpoint", step)
            if manager.latest_checkpoint:
                ckpt.restore(manager.latest_checkpoint)
                continue
            raise FloatingPointError("non-finite loss and no checkpoint to restore")
        ema = vals if ema is None else 0.99 * ema + 0.01 * vals
        window.append(vals)
        bar.update(1)
        if step % 50 == 0:
            psnr = 10 * np.log10(255.0 ** 2 / ema[2])
            bar.set_postfix(loss=f"{ema[0]:.3f}", bpp=f"{ema[1]:.3f}", psnr=f"{psnr:.2f}")
            with writer.as_default(step=step):
                tf.summary.scalar("loss", ema[0]); tf.summary.scalar("bpp", ema[1])
                tf.summary.scalar("psnr", psnr); tf.summary.scalar("lr", optimizer.learning_rate)
        if step % args.log_every == 0:
            rate = (step - s0) / (time.time() - t0)
            mean = np.mean(window, axis=0)
            window.clear()
            log.info("step %d loss %.4f bpp %.4f psnr %.2f (%.2f steps/s)", step, mean[0], mean[1],
                     10 * np.log10(255.0 ** 2 / mean[2]), rate)
        if step % cfg.validate_every == 0 or step == end:
            res = validate(step)
            with writer.as_default(step=step):
                for k in ("val_est_bpp", "coded_bpp_mean", "coded_psnr", "train_target", "beta"):
                    tf.summary.scalar(k, res[k])
        if step % cfg.checkpoint_every == 0 or step == end:
            manager.save(checkpoint_number=step)
            save_state(model, step, state_path, cfg.__dict__, state_extra())
        if cfg.export_every and step % cfg.export_every == 0:
            _export(model, cfg, step, log, args.export_dir)
    bar.close()
    log.info("stopped at step %d (%.2f steps/s this run)", int(step_var), (int(step_var) - s0) / max(time.time() - t0, 1e-9))
    if not args.no_export and int(step_var) >= end:
        _export(model, cfg, int(step_var), log, args.export_dir)
    return 0


def _center_crop(path: Path, size: int) -> np.ndarray:
    from models.data import load_rgb
    img = load_rgb(path)
    h, w = img.shape[:2]
    s = min(size, h, w) // 64 * 64
    y, x = (h - s) // 2, (w - s) // 2
    return img[y:y + s, x:x + s]


def _export(model, cfg, step: int, log, out_dir: str) -> None:
    from models.export import export
    path = export(model, cfg.name, extra={"step": step, "trained": True, "config": cfg.__dict__}, out_dir=Path(out_dir))
    log.info("exported step %d to %s", step, path)


if __name__ == "__main__":
    sys.exit(main())
