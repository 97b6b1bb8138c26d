"""Train one model in JAX: python -m training.train --config training/configs/<name>.yaml

Runs on whatever JAX finds: the 2-core CPU here, a lent GPU, several devices (data
parallel over all local devices; multi-host with --coordinator), the same code.

Resumes, nearest first, from:
1. <out>/ckpt: the run's full checkpoint (parameters, Adam moments, R_t, beta);
2. --state-dir/<name>.npz: the committed resume state (fp16 weights + step; Adam restarts);
3. config `init_from`: a parent's committed state (fine-tuning; recorded as lineage);
4. a fresh initialisation.

Writes into --out (default runs/<name>) as it goes, so a killed run still leaves them:
ckpt/ (shards of at most 16 MiB), curve.csv (estimated Kodak bpp/PSNR against training
seconds), train.log. --max-seconds bounds the training clock, which starts after
compilation. SIGTERM/SIGINT finish the step, save and exit.
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

from evaluation.datasets import KODAK
from evaluation.metrics import psnr_from_mse

ROOT = Path(__file__).resolve().parent.parent
FETCH_EVERY = 25          # steps between host reads of the metrics (the only host sync in the loop)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from training.config import TrainConfig
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="config keys:\n" + TrainConfig.help_text())
    p.add_argument("--config", help="YAML config (layered with `inherit:`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key; repeatable")
    p.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many steps in this invocation (0 = run to config.steps)")
    p.add_argument("--max-seconds", type=float, default=0,
                   help="stop after this many training seconds, counted after compilation (0 = no limit)")
    p.add_argument("--out", default="", help="run folder: ckpt/, curve.csv, train.log (default RUNS_DIR/<name>)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs"), help="parent of the default run folder")
    p.add_argument("--state-dir", default=str(ROOT / "models" / "checkpoints"),
                   help="where the committed resume state (fp16 weights + step) is read and written; '' = neither")
    p.add_argument("--resume", default="",
                   help="checkpoint folder to start from when OUT/ckpt does not exist yet (a carried run checkpoint)")
    p.add_argument("--kodak", default=str(KODAK) if KODAK.is_dir() else "",
                   help="folder of Kodak images for the estimated curve ('' = no curve)")
    p.add_argument("--kodak-limit", type=int, default=0, help="curve on the first N Kodak images only (0 = all)")
    p.add_argument("--curve-seconds", type=float, default=60.0,
                   help="training seconds between curve points (the run's first and last steps always get one)")
    p.add_argument("--checkpoint-seconds", type=float, default=0,
                   help="also save the checkpoint every this many seconds (0 = by config checkpoint_every only)")
    p.add_argument("--no-export", action="store_true", help="do not export to the codec's model files at the end")
    p.add_argument("--export-dir", default=str(ROOT / "models" / "weights"), help="where exports are written")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-every", type=int, default=500, help="steps between plain-log lines")
    p.add_argument("--coordinator", default="", help="multi-host: coordinator address host:port (jax.distributed)")
    p.add_argument("--num-processes", type=int, default=1, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, default=0, help="multi-host: this process's index")
    return p.parse_args(argv)


def learning_rate(cfg, step):
    """Warm-up, then 10x drops at the `lr_decay_at` fractions of `steps`; driven by the run's step counter,
    which survives a resume from a committed state (where Adam's own count restarts)."""
    import jax.numpy as jnp
    s = jnp.asarray(step).astype(jnp.float32)
    lr = cfg.lr * jnp.minimum(1.0, (s + 1) / max(1, cfg.warmup_steps))
    for frac in cfg.lr_decay_at:
        lr = jnp.where(s >= frac * cfg.steps, lr * 0.1, lr)
    return lr


class Trainer:
    """The compiled step, the evaluation functions and the device placement of one run."""

    def __init__(self, cfg, pool_arrays: tuple):
        import jax
        import jax.numpy as jnp
        import optax
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        from training.data import sample_crops
        from training.model import Loss, forward
        if cfg.model == "charm":
            from training.charm import forward  # noqa: F811 - bitstream v3's slice entropy model
        self.cfg = cfg
        devices = np.array(jax.devices())
        if cfg.batch % len(devices):
            raise ValueError(f"batch {cfg.batch} does not split over {len(devices)} devices")
        self.mesh = Mesh(devices, ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P("data"))
        self.pool = tuple(self._global(a) for a in pool_arrays)
        chain = [optax.clip_by_global_norm(cfg.clipnorm)] if cfg.clipnorm else []
        self.optimizer = optax.chain(*chain, optax.scale_by_adam(eps=1e-7))   # Keras Adam's epsilon
        loss = Loss(cfg.loss, cfg.lmbda, cfg.mse_weight, cfg.msssim_weight)
        dtype = None if cfg.compute_dtype == "float32" else jnp.dtype(cfg.compute_dtype)
        seed_key = jax.random.PRNGKey(cfg.seed)

        def step_fn(params, opt_state, pool, step, rt, beta):
            key = jax.random.fold_in(seed_key, step)            # resumable: the key is a function of the step
            kc, kn = jax.random.split(key)
            x = jax.lax.with_sharding_constraint(sample_crops(pool, kc, cfg.batch, cfg.patch), self.sharded)

            def objective(p):
                out = forward(p, x, kn, cfg.quantization, dtype)
                return loss(out, x, rt, beta), out

            (value, out), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            lr = learning_rate(cfg, step)
            params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
            return params, opt_state, jnp.stack([value, out["bpp"], out["mse"]])

        self.step = jax.jit(step_fn, donate_argnums=(0, 1))
        self.evaluate = jax.jit(lambda p, x: {k: v for k, v in forward(p, x).items() if k != "x_hat"})
        self._evaluators: dict[tuple, object] = {}     # shape -> executable compiled before the clock

    def _global(self, a: np.ndarray):
        """A replicated global array from host data (every process holds the same)."""
        import jax
        return jax.make_array_from_callback(a.shape, self.replicated, lambda idx: a[idx])

    def place(self, params: dict, opt_state=None):
        import jax
        params = {k: self._global(np.asarray(v, np.float32)) for k, v in params.items()}
        if opt_state is None:
            opt_state = self.optimizer.init(params)
        opt_state = jax.tree_util.tree_map(lambda a: self._global(np.asarray(a)), opt_state)
        return params, opt_state

    def compile(self, params, opt_state, eval_shapes: list[tuple]) -> float:
        """Compile the step and every evaluation shape before the clock starts; returns seconds spent."""
        import jax
        import jax.numpy as jnp
        t = time.time()
        args = (params, opt_state, self.pool, jnp.int32(0), jnp.float32(1.0), jnp.float32(1.0))
        self.step = self.step.lower(*args).compile()
        for shape in sorted(set(eval_shapes)):
            self._evaluators[shape] = self.evaluate.lower(params, jax.ShapeDtypeStruct(shape, jnp.float32)).compile()
        return time.time() - t

    def estimate(self, params, images: list[np.ndarray]) -> tuple[list[float], list[float]]:
        """Per-image estimated bpp (rounded latents' likelihoods) and PSNR-RGB of the float reconstruction."""
        bpp, psnr = [], []
        for img in images:
            x = img[None].astype(np.float32) / 255.0
            out = self._evaluators.get(x.shape, self.evaluate)(params, x)   # AOT executables are not in jit's cache
            bpp.append(float(out["bpp"]))
            psnr.append(psnr_from_mse(float(out["mse"])))
        return bpp, psnr


def _padded(img: np.ndarray) -> np.ndarray:
    """Edge-pad to multiples of 64, as the codec does; the estimate then counts the padded pixels' bits."""
    h, w = img.shape[:2]
    return np.pad(img, ((0, -h % 64), (0, -w % 64), (0, 0)), mode="edge")


def _logger(out: Path) -> logging.Logger:
    log = logging.getLogger(f"train:{out}")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fh = logging.FileHandler(out / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(fh)
    return log


def _initial(cfg, args, log) -> tuple[dict, list | None, dict]:
    """(params, optimiser leaves or None, loop state) from the nearest resume point."""
    import jax

    from models import jax_transforms as J
    from training import checkpoint, state
    out = Path(args.out)
    loop = {"step": 0, "train_target": cfg.target_bpp, "beta": cfg.beta, "history": [], "lineage": [],
            "wall_seconds": 0.0, "runs": []}
    keep = ("step", "train_target", "beta", "history", "lineage", "wall_seconds", "runs")
    for ckpt in (out / "ckpt", Path(args.resume) if args.resume else None):
        if ckpt is not None and checkpoint.exists(ckpt):
            params, leaves, meta = checkpoint.load(ckpt)
            loop.update({k: meta[k] for k in keep if k in meta})
            log.info("resumed checkpoint %s at step %d", ckpt, loop["step"])
            return params, leaves, loop
    state_path = Path(args.state_dir) / f"{cfg.name}.npz" if args.state_dir else None
    if state_path and state_path.exists():
        params, meta = state.load(state_path)
        loop.update({k: meta[k] for k in keep if k in meta})
        log.info("resumed committed state %s at step %d (Adam moments restart)", state_path, loop["step"])
        return params, None, loop
    if cfg.init_from:
        params, parent = state.load(ROOT / cfg.init_from)
        loop["lineage"] = [{"name": parent["config"]["name"], "state": cfg.init_from, "step": parent["step"],
                            "wall_seconds": parent.get("wall_seconds", 0.0)}] + parent.get("lineage", [])
        log.info("initialised from %s (step %d)", cfg.init_from, parent["step"])
        return params, None, loop
    params = J.init(jax.random.PRNGKey(cfg.seed), cfg.num_filters, cfg.latent_channels)
    log.info("fresh initialisation (seed %d)", cfg.seed)
    return {k: np.asarray(v) for k, v in params.items()}, None, loop


def _device_name() -> str:
    import jax
    d = jax.devices()[0]
    return f"{len(jax.devices())} x {getattr(d, 'device_kind', d.platform)} ({d.platform})"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from training import config as C
    cfg = C.load(args.config, args.set)

    import jax
    if args.coordinator:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax.numpy as jnp

    from training import checkpoint, state
    from training.data import Pool, center_crop, list_images, load_images, load_rgb, split_holdout
    from training.validate import CodedStats, adjust, coded_stats, tf_available

    args.out = args.out or str(Path(args.runs_dir) / cfg.name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = _logger(out)
    lead = jax.process_index() == 0
    log.info("config %s", json.dumps(cfg.__dict__))
    files = list_images(cfg.train_dir)
    train_files, val_files = split_holdout(files, cfg.holdout_every)
    images = load_images(train_files, cfg.patch, cfg.seed, cfg.max_side, progress=not args.no_progress)
    pool = Pool.from_images(images)
    del images
    log.info("data: %d train files (%d pool images, %.1f Mpixel), %d held out; devices: %s",
             len(train_files), len(pool.offsets), len(pool.pixels) / 1e6, len(val_files), _device_name())
    val = [center_crop(load_rgb(f), cfg.val_crop) for f in val_files]
    kodak = sorted(p for p in Path(args.kodak).iterdir() if p.suffix.lower() in (".png", ".webp")) if args.kodak else []
    kodak = [_padded(load_rgb(f)) for f in kodak[:args.kodak_limit or None]]
    probe = cfg.rate_probe if cfg.rate_probe != "auto" else ("coded" if tf_available() else "estimated")

    trainer = Trainer(cfg, pool.arrays())
    params_np, leaves, loop = _initial(cfg, args, log)
    if cfg.model == "charm":                # a v2 start (the base state) gains slice nets that output zero
        from training.charm import ensure_slices
        params_np = ensure_slices(params_np, cfg)
        probe = "estimated"                 # the coded probe exports v2 model files
    params, opt_state = trainer.place(params_np)
    if leaves is not None:
        treedef = jax.tree_util.tree_structure(opt_state)
        opt_state = jax.tree_util.tree_unflatten(treedef, [trainer._global(np.asarray(a)) for a in leaves])
    secs = trainer.compile(params, opt_state, [(1, *im.shape) for im in val + kodak])
    log.info("compiled in %.1f s (not counted in --max-seconds)", secs)

    rt, beta = float(loop["train_target"]), float(loop["beta"])
    step0 = int(loop["step"])
    end = cfg.steps if not args.max_steps else min(cfg.steps, step0 + args.max_steps)
    run = {"device": _device_name(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "from_step": step0, "to_step": step0, "seconds": 0.0, "batch": cfg.batch, "patch": cfg.patch,
           "compute_dtype": cfg.compute_dtype, "steps_per_s": 0.0, "curve": []}
    loop["runs"] = list(loop.get("runs", [])) + [run]
    wall0 = float(loop.get("wall_seconds", 0.0))
    t0 = time.time()

    def elapsed() -> float:
        return time.time() - t0

    def host_params() -> dict:
        return {k: np.asarray(v) for k, v in jax.device_get(params).items()}

    def meta() -> dict:
        run.update(to_step=step, seconds=round(elapsed(), 1),
                   steps_per_s=round((step - step0) / max(elapsed(), 1e-9), 3))
        return {"step": step, "train_target": rt, "beta": beta, "history": loop["history"],
                "lineage": loop["lineage"], "wall_seconds": round(wall0 + elapsed(), 1), "runs": loop["runs"],
                "config": cfg.__dict__}

    def save() -> None:
        if not lead:
            return
        m = meta()
        checkpoint.save(out / "ckpt", host_params(), [np.asarray(a) for a in jax.tree_util.tree_leaves(
            jax.device_get(opt_state))], m)
        if args.state_dir and cfg.model != "charm":     # state.py holds the v2 layout; charm keeps its ckpt
            state.save(host_params(), step, Path(args.state_dir) / f"{cfg.name}.npz", cfg.__dict__,
                       {k: v for k, v in m.items() if k not in ("step", "config")})

    def curve_point() -> None:
        if not kodak:
            return
        bpp, psnr = trainer.estimate(params, kodak)
        point = {"seconds": round(elapsed(), 1), "step": step, "kodak_est_bpp": round(float(np.mean(bpp)), 4),
                 "kodak_psnr": round(float(np.mean(psnr)), 3)}
        run["curve"].append(point)
        if lead:
            path = out / "curve.csv"
            new = not path.exists()
            with path.open("a") as f:
                if new:
                    f.write("device,seconds,step,kodak_est_bpp,kodak_psnr\n")
                f.write(f"{run['device']},{point['seconds']},{step},{point['kodak_est_bpp']},{point['kodak_psnr']}\n")
        log.info("curve %s", json.dumps(point))

    def validate() -> None:
        nonlocal rt, beta
        est_bpp, est_psnr = trainer.estimate(params, val)
        res = {"step": step, "probe": probe, "val_est_bpp": float(np.mean(est_bpp)), "train_target": rt,
               "beta": beta, "wall_seconds": round(wall0 + elapsed(), 1)}
        stats = coded_stats(host_params(), val) if probe == "coded" else CodedStats(est_bpp, est_psnr)
        res.update(stats.as_dict() if probe == "coded" else
                   {k.replace("coded_", "est_"): v for k, v in stats.as_dict().items()})
        if cfg.auto_rate and cfg.loss == "guerin":
            rt, beta, why = adjust(rt, beta, cfg.target_bpp, stats, beta_max=cfg.beta_max)
            res["adjust"] = f"{why}: R_t -> {rt:.4f}, beta -> {beta:.1f}"
        loop["history"].append(res)
        log.info("validate %s", json.dumps(res))

    stop = {"signal": None}

    def _on_signal(signum, _frame):  # finish the step, save, exit: background runs die with sessions
        stop["signal"] = signum
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)

    from tqdm import tqdm
    bar = tqdm(total=end, initial=step0, desc=cfg.name, unit="step", disable=args.no_progress or not lead,
               mininterval=5)
    step = step0
    curve_point()
    pending, window, ema = [], [], None
    last_curve, last_ckpt = 0.0, 0.0
    while step < end:
        if stop["signal"] is not None or (args.max_seconds and elapsed() >= args.max_seconds):
            break
        params, opt_state, metrics = trainer.step(params, opt_state, trainer.pool, jnp.int32(step),
                                                  jnp.float32(rt), jnp.float32(beta))
        pending.append(metrics)
        step += 1
        if len(pending) >= min(FETCH_EVERY, args.log_every) or step == end:
            vals = np.asarray(jax.device_get(jnp.stack(pending)))
            pending.clear()
            if not np.all(np.isfinite(vals)):
                log.info("non-finite loss before step %d; back to the last checkpoint", step)
                if not checkpoint.exists(out / "ckpt"):
                    raise FloatingPointError("non-finite loss and no checkpoint to restore")
                p, lv, m = checkpoint.load(out / "ckpt")
                params, opt_state = trainer.place(p)
                opt_state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(opt_state),
                                                         [trainer._global(np.asarray(a)) for a in lv])
                step, rt, beta = int(m["step"]), float(m["train_target"]), float(m["beta"])
                continue
            window.extend(vals)
            mean = vals.mean(axis=0)
            ema = mean if ema is None else 0.9 * ema + 0.1 * mean
            bar.update(len(vals))
            bar.set_postfix(loss=f"{ema[0]:.3f}", bpp=f"{ema[1]:.3f}",
                            psnr=f"{psnr_from_mse(ema[2]):.2f}")
        if step % args.log_every == 0 and window:
            m = np.mean(window, axis=0)
            window.clear()
            log.info("step %d loss %.6f bpp %.4f psnr %.2f (%.2f steps/s)", step, m[0], m[1],
                     psnr_from_mse(m[2]), (step - step0) / max(elapsed(), 1e-9))
        if step % cfg.validate_every == 0:
            validate()
        if args.curve_seconds and elapsed() - last_curve >= args.curve_seconds:
            curve_point()
            last_curve = elapsed()
        if step % cfg.checkpoint_every == 0 or (args.checkpoint_seconds and
                                                elapsed() - last_ckpt >= args.checkpoint_seconds):
            save()
            last_ckpt = elapsed()
    bar.close()
    if step > step0 and (not loop["history"] or loop["history"][-1]["step"] != step) and step == end:
        validate()
    curve_point()
    save()
    if stop["signal"] is not None:
        log.info("signal %d: saved state at step %d and stopped", stop["signal"], step)
    log.info("stopped at step %d (%.2f steps/s over %.1f s; %s)", step, (step - step0) / max(elapsed(), 1e-9),
             elapsed(), run["device"])
    if lead and not args.no_export and step >= end and tf_available():
        from training.export import export, export_v3
        path = (export_v3 if cfg.model == "charm" else export)(
            host_params(), cfg.name, extra={"step": step, "trained": True, "config": cfg.__dict__},
            out_dir=Path(args.export_dir))
        log.info("exported step %d to %s", step, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
