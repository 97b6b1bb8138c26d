"""Train one model in JAX: python -m training.train --config training/configs/<name>.yaml

Runs on whatever JAX finds: the 2-core CPU here, a lent GPU, several devices (data
parallel over all local devices; multi-host with --coordinator), the same code.

Resumes, nearest first, from:
1. <out>/ckpt: the run's full checkpoint (parameters, Adam moments, R_t, beta);
2. --state-dir/<name>.npz: the committed resume state (fp16 weights + step; Adam restarts);
3. config `init_from`: a parent's committed state (fine-tuning; recorded as lineage); with
   `init_widen`, the parent widened to the config's N and M (training/widen.py), continued at its step;
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
from training.schedule import learning_rate

ROOT = Path(__file__).resolve().parent.parent
FETCH_EVERY = 25          # steps between host reads of the metrics (the only host sync in the loop)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; every config key is listed in the epilog (training/config.py declares them)."""
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
    p.add_argument("--backend", default="auto", choices=["auto", "tf", "jax"],
                   help="the training step: 'tf' (oneDNN, the fast one on a CPU), 'jax' (accelerators; the v3 "
                        "charm model), 'auto' (jax where JAX sees an accelerator or the model is charm, else tf)")
    p.add_argument("--coordinator", default="", help="multi-host: coordinator address host:port (jax.distributed)")
    p.add_argument("--num-processes", type=int, default=1, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, default=0, help="multi-host: this process's index")
    return p.parse_args(argv)


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


def resume_point(cfg, args, log) -> tuple[dict, list | None, dict]:
    """(params, optimiser leaves or None, loop state) from the nearest resume point."""
    from models import jax_transforms as J
    from training import checkpoint, state
    out = Path(args.out)
    loop = {"step": 0, "train_target": cfg.target_bpp, "beta": cfg.beta, "history": [], "lineage": [],
            "wall_seconds": 0.0, "runs": []}
    keep = ("step", "train_target", "beta", "history", "lineage", "wall_seconds", "runs")
    state_path = Path(args.state_dir) / f"{cfg.name}.npz" if args.state_dir else None
    state_step = state.read_meta(state_path)["step"] if state_path and state_path.exists() else -1
    for ckpt in (out / "ckpt", Path(args.resume) if args.resume else None):
        if ckpt is not None and checkpoint.exists(ckpt):
            if json.loads((ckpt / "meta.json").read_text())["step"] < state_step:
                log.info("checkpoint %s is behind the committed state %s: resuming the state", ckpt, state_path)
                break       # trained on elsewhere (another runs folder, e.g. an A/B branch's control)
            params, leaves, meta = checkpoint.load(ckpt)
            _check_widths(params, cfg, ckpt)
            loop.update({k: meta[k] for k in keep if k in meta})
            log.info("resumed checkpoint %s at step %d", ckpt, loop["step"])
            return params, leaves, loop
    if state_path and state_path.exists():
        params, meta = state.load(state_path)
        _check_widths(params, cfg, state_path)
        loop.update({k: meta[k] for k in keep if k in meta})
        log.info("resumed committed state %s at step %d (Adam moments restart)", state_path, loop["step"])
        return params, None, loop
    if cfg.init_from and cfg.init_widen:
        from training.widen import widened_parent
        params, meta = widened_parent(cfg)
        loop.update({k: meta[k] for k in keep if k in meta})
        log.info("initialised from %s (step %d) widened to N=%d M=%d; its step, R_t and beta go on",
                 cfg.init_from, loop["step"], cfg.num_filters, cfg.latent_channels)
        return params, None, loop
    if cfg.init_from:
        params, parent = state.load(ROOT / cfg.init_from)
        _check_widths(params, cfg, cfg.init_from, "; init_widen: true widens a narrower parent")
        record = {"name": parent["config"]["name"], "state": cfg.init_from, "step": parent["step"],
                  "wall_seconds": parent.get("wall_seconds", 0.0)}
        if cfg.init_continue:   # a branch: the parent's step, R_t, beta and curve go on (as a widening's do)
            loop.update({k: parent[k] for k in ("step", "train_target", "beta", "history") if k in parent})
            record["branched"] = True
        loop["lineage"] = [record] + parent.get("lineage", [])
        log.info("initialised from %s (step %d)%s", cfg.init_from, parent["step"],
                 "; its step, R_t and beta go on" if cfg.init_continue else "")
        return params, None, loop
    import jax  # one initialisation for both backends: JAX's
    params = J.init(jax.random.PRNGKey(cfg.seed), cfg.num_filters, cfg.latent_channels)
    log.info("fresh initialisation (seed %d)", cfg.seed)
    return {k: np.asarray(v) for k, v in params.items()}, None, loop


def _check_widths(params: dict, cfg, source, hint: str = "") -> None:
    """A resume point's widths are the config's: the step's noise and the exports are built from the config."""
    from models import network
    n, m = network.widths_of(params)
    if (n, m) != (cfg.num_filters, cfg.latent_channels):
        raise ValueError(f"{source} holds N={n} M={m}, the config says N={cfg.num_filters} M={cfg.latent_channels}: "
                         f"set num_filters and latent_channels to match{hint}")


# -- the steps of main, in order --------------------------------------------------------------------------

def build_config(args):
    """The config: YAML layers, then --set overrides (training/config.py)."""
    from training import config as C
    return C.load(args.config, args.set)


def start_jax(args) -> None:
    """Multi-host: join the coordinator before anything else asks JAX for its devices."""
    if args.coordinator:
        import jax
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def choose_backend(args, cfg) -> str:
    """'tf' or 'jax' for --backend (auto: JAX on an accelerator, for charm, or where TF is absent)."""
    from training.validate import tf_available
    if args.backend != "auto":
        if args.backend == "tf" and cfg.model == "charm":
            raise ValueError("the charm (v3) model trains with --backend jax only")
        return args.backend
    if cfg.model == "charm" or not tf_available() or args.coordinator:
        return "jax"
    import importlib.util
    if importlib.util.find_spec("jax") is not None:
        import jax
        if jax.default_backend() != "cpu":
            return "jax"
    return "tf"


def resolve_dtype(cfg, backend: str) -> None:
    """compute_dtype 'auto': bfloat16 where the CPU computes it natively (TF backend), else float32."""
    if cfg.compute_dtype == "auto":
        from models.cpu import native_bf16
        cfg.compute_dtype = "bfloat16" if backend == "tf" and native_bf16() else "float32"


def make_trainer(backend: str, cfg, pool_arrays: tuple):
    if backend == "tf":
        from training.tf_step import Trainer
    else:
        from training.jax_step import Trainer
    return Trainer(cfg, pool_arrays)


def open_run_folder(args, cfg) -> logging.Logger:
    """The run folder (--out, default RUNS_DIR/<name>; args.out is set to it) and its train.log, which starts
    with the config."""
    args.out = args.out or str(Path(args.runs_dir) / cfg.name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = _logger(out)
    log.info("config %s", json.dumps(cfg.__dict__))
    return log


def load_data(cfg, args, log) -> tuple:
    """(training pixel pool, held-out validation crops, edge-padded Kodak images for the curve)."""
    from training.data import Pool, center_crop, list_images, load_images, load_rgb, split_holdout
    files = list_images(cfg.train_dir)
    train_files, val_files = split_holdout(files, cfg.holdout_every)
    images = load_images(train_files, cfg.patch, cfg.seed, cfg.max_side, progress=not args.no_progress)
    pool = Pool.from_images(images)
    del images
    log.info("data: %d train files (%d pool images, %.1f Mpixel), %d held out",
             len(train_files), len(pool.offsets), len(pool.pixels) / 1e6, len(val_files))
    val = [center_crop(load_rgb(f), cfg.val_crop) for f in val_files]
    kodak = sorted(p for p in Path(args.kodak).iterdir() if p.suffix.lower() in (".png", ".webp")) if args.kodak else []
    kodak = [_padded(load_rgb(f)) for f in kodak[:args.kodak_limit or None]]
    return pool, val, kodak


def rate_probe(cfg) -> str:
    """The validation probe: 'auto' is coded where TF is installed; charm always estimates (the coded probe
    exports v2 model files)."""
    from training.validate import tf_available
    if cfg.model == "charm":
        return "estimated"
    return cfg.rate_probe if cfg.rate_probe != "auto" else ("coded" if tf_available() else "estimated")


def initial_state(cfg, args, log, trainer) -> tuple:
    """The backend's placed state (parameters and optimiser) and the loop state, from the nearest resume point."""
    params, leaves, loop = resume_point(cfg, args, log)
    if cfg.model == "charm":                # a v2 start (the base state) gains slice nets that output zero
        from training.charm import ensure_slices
        params = ensure_slices(params, cfg)
    return trainer.place(params, leaves), loop


def compile_before_clock(trainer, state, eval_images: list[np.ndarray], log) -> None:
    """Compile the step and every evaluation shape, so that --max-seconds counts training only."""
    secs = trainer.compile(state, [(1, *im.shape) for im in eval_images])
    log.info("%s backend on %s (%s); compiled in %.1f s (not counted in --max-seconds)", trainer.backend,
             trainer.device_name(), trainer.cfg.compute_dtype, secs)


class TrainingRun:
    """This invocation's loop: step, R_t and beta, the clock, and what it writes as it goes (ckpt/, curve.csv,
    train.log, the run's record in `runs`)."""

    def __init__(self, cfg, args, log, trainer, state, loop: dict,
                 val: list[np.ndarray], kodak: list[np.ndarray], probe: str):
        self.cfg, self.args, self.log, self.trainer = cfg, args, log, trainer
        self.out = Path(args.out)
        self.lead = trainer.lead
        self.state, self.loop = state, loop
        self.val, self.kodak, self.probe = val, kodak, probe
        self.rt, self.beta = float(loop["train_target"]), float(loop["beta"])
        self.step0 = self.step = int(loop["step"])
        self.end = cfg.steps if not args.max_steps else min(cfg.steps, self.step0 + args.max_steps)
        self.record = {"device": trainer.device_name(), "backend": trainer.backend,
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "from_step": self.step0, "to_step": self.step0, "seconds": 0.0, "batch": cfg.batch,
                       "patch": cfg.patch, "compute_dtype": cfg.compute_dtype, "steps_per_s": 0.0, "curve": []}
        loop["runs"] = list(loop.get("runs", [])) + [self.record]
        self.wall0 = float(loop.get("wall_seconds", 0.0))
        self.stop_signal = None
        self.ema = None
        self.last_curve = self.last_ckpt = 0.0
        self.t0 = time.time()
        from training.board import Board
        self.board = Board(self.out / "tb", enabled=self.lead)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def steps_per_s(self) -> float:
        return (self.step - self.step0) / max(self.elapsed(), 1e-9)

    def host_params(self) -> dict:
        return self.trainer.host_params(self.state)

    def meta(self) -> dict:
        self.record.update(to_step=self.step, seconds=round(self.elapsed(), 1),
                           steps_per_s=round(self.steps_per_s(), 3))
        return {"step": self.step, "train_target": self.rt, "beta": self.beta, "history": self.loop["history"],
                "lineage": self.loop["lineage"], "wall_seconds": round(self.wall0 + self.elapsed(), 1),
                "runs": self.loop["runs"], "config": self.cfg.__dict__}

    def save(self) -> None:
        from training import checkpoint, state
        if not self.lead:
            return
        m = self.meta()
        checkpoint.save(self.out / "ckpt", self.host_params(), self.trainer.host_leaves(self.state), m)
        if self.args.state_dir and self.cfg.model != "charm":   # state.py holds the v2 layout; charm keeps its ckpt
            state.save(self.host_params(), self.step, Path(self.args.state_dir) / f"{self.cfg.name}.npz",
                       self.cfg.__dict__, {k: v for k, v in m.items() if k not in ("step", "config")})

    def curve_point(self) -> None:
        if not self.kodak:
            return
        bpp, psnr = self.trainer.estimate(self.state, self.kodak)
        point = {"seconds": round(self.elapsed(), 1), "step": self.step,
                 "kodak_est_bpp": round(float(np.mean(bpp)), 4), "kodak_psnr": round(float(np.mean(psnr)), 3)}
        self.record["curve"].append(point)
        if self.lead:
            path = self.out / "curve.csv"
            new = not path.exists()
            with path.open("a") as f:
                if new:
                    f.write("device,seconds,step,kodak_est_bpp,kodak_psnr\n")
                f.write(f"{self.record['device']},{point['seconds']},{self.step},{point['kodak_est_bpp']},"
                        f"{point['kodak_psnr']}\n")
        self.log.info("curve %s", json.dumps(point))

    def validate(self) -> None:
        from training.validate import CodedStats, adjust, coded_stats
        cfg, probe = self.cfg, self.probe
        est_bpp, est_psnr = self.trainer.estimate(self.state, self.val)
        res = {"step": self.step, "probe": probe, "val_est_bpp": float(np.mean(est_bpp)), "train_target": self.rt,
               "beta": self.beta, "wall_seconds": round(self.wall0 + self.elapsed(), 1)}
        stats = coded_stats(self.host_params(), self.val) if probe == "coded" else CodedStats(est_bpp, est_psnr)
        res.update(stats.as_dict() if probe == "coded" else
                   {k.replace("coded_", "est_"): v for k, v in stats.as_dict().items()})
        if cfg.auto_rate and cfg.loss == "guerin":
            self.rt, self.beta, why = adjust(self.rt, self.beta, cfg.target_bpp, stats, beta_max=cfg.beta_max)
            res["adjust"] = f"{why}: R_t -> {self.rt:.4f}, beta -> {self.beta:.1f}"
        self.loop["history"].append(res)
        self.log.info("validate %s", json.dumps(res))
        self.board.scalars(self.step, {f"val/{k}": v for k, v in res.items() if isinstance(v, (int, float))
                                       and k not in ("step", "wall_seconds")})
        if self.board.enabled:
            crops = self.val[:3]
            rec = self.trainer.reconstruct(self.state, crops)
            self.board.images(self.step, "val/source_and_decoded",
                              [np.concatenate([c / 255.0, r], axis=1) for c, r in zip(crops, rec)])

    def _on_signal(self, signum, _frame) -> None:  # finish the step, save, exit: background runs die with sessions
        self.stop_signal = signum

    def _back_to_checkpoint(self) -> None:
        """A non-finite loss: parameters, Adam, step, R_t and beta from the last checkpoint."""
        from training import checkpoint
        self.log.info("non-finite loss before step %d; back to the last checkpoint", self.step)
        if not checkpoint.exists(self.out / "ckpt"):
            raise FloatingPointError("non-finite loss and no checkpoint to restore")
        p, lv, m = checkpoint.load(self.out / "ckpt")
        self.state = self.trainer.place(p, lv)
        self.step, self.rt, self.beta = int(m["step"]), float(m["train_target"]), float(m["beta"])

    def _fetch(self, pending: list, window: list, bar) -> bool:
        """Read the pending steps' metrics to the host (the loop's only sync); False if any is non-finite."""
        vals = self.trainer.fetch(pending)
        pending.clear()
        if not np.all(np.isfinite(vals)):
            return False
        window.extend(vals)
        mean = vals.mean(axis=0)
        self.ema = mean if self.ema is None else 0.9 * self.ema + 0.1 * mean
        bar.update(len(vals))
        bar.set_postfix(loss=f"{self.ema[0]:.3f}", bpp=f"{self.ema[1]:.3f}", psnr=f"{psnr_from_mse(self.ema[2]):.2f}")
        return True

    def _log_steps(self, window: list) -> None:
        m = np.mean(window, axis=0)
        window.clear()
        self.log.info("step %d loss %.6f bpp %.4f psnr %.2f (%.2f steps/s)", self.step, m[0], m[1],
                      psnr_from_mse(m[2]), self.steps_per_s())
        self.board.scalars(self.step, {"train/loss": m[0], "train/bpp": m[1], "train/psnr": psnr_from_mse(m[2]),
                                       "train/lr": float(learning_rate(self.cfg, self.step, xp=np)),
                                       "train/steps_per_s": self.steps_per_s(), "train/R_t": self.rt,
                                       "train/beta": self.beta})

    def _when_due(self) -> None:
        """After a step: validation by steps, a curve point by seconds, a checkpoint by steps or seconds."""
        args, cfg = self.args, self.cfg
        if self.step % cfg.validate_every == 0:
            self.validate()
        if args.curve_seconds and self.elapsed() - self.last_curve >= args.curve_seconds:
            self.curve_point()
            self.last_curve = self.elapsed()
        if self.step % cfg.checkpoint_every == 0 or (args.checkpoint_seconds and
                                                     self.elapsed() - self.last_ckpt >= args.checkpoint_seconds):
            self.save()
            self.last_ckpt = self.elapsed()

    def train(self) -> None:
        """Step until `end`, --max-seconds or SIGTERM/SIGINT; curve point first, then each step's due work."""
        from tqdm import tqdm
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        args = self.args
        bar = tqdm(total=self.end, initial=self.step0, desc=self.cfg.name, unit="step",
                   disable=args.no_progress or not self.lead, mininterval=5)
        self.curve_point()
        pending, window = [], []
        while self.step < self.end:
            if self.stop_signal is not None or (args.max_seconds and self.elapsed() >= args.max_seconds):
                break
            self.state, metrics = self.trainer.step(self.state, self.step, self.rt, self.beta)
            pending.append(metrics)
            self.step += 1
            if len(pending) >= min(FETCH_EVERY, args.log_every) or self.step == self.end:
                if not self._fetch(pending, window, bar):
                    self._back_to_checkpoint()
                    continue
            if self.step % args.log_every == 0 and window:
                self._log_steps(window)
            self._when_due()
        bar.close()

    def finish(self) -> None:
        """Validate the last step (unless the loop just did), a last curve point, save, and say why it stopped."""
        history = self.loop["history"]
        if self.step > self.step0 and (not history or history[-1]["step"] != self.step) and self.step == self.end:
            self.validate()
        self.curve_point()
        self.save()
        if self.stop_signal is not None:
            self.log.info("signal %d: saved state at step %d and stopped", self.stop_signal, self.step)
        self.log.info("stopped at step %d (%.2f steps/s over %.1f s; %s)", self.step, self.steps_per_s(),
                      self.elapsed(), self.record["device"])

    def export(self) -> None:
        """A finished run (all `steps`) becomes the codec's model files, where TF is installed."""
        from training.validate import tf_available
        if self.lead and not self.args.no_export and self.step >= self.end and tf_available():
            from training.export import export, export_v3
            path = (export_v3 if self.cfg.model == "charm" else export)(
                self.host_params(), self.cfg.name,
                extra={"step": self.step, "trained": True, "config": self.cfg.__dict__},
                out_dir=Path(self.args.export_dir))
            self.log.info("exported step %d to %s", self.step, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    backend = choose_backend(args, cfg)
    resolve_dtype(cfg, backend)
    if backend == "jax":
        start_jax(args)
    log = open_run_folder(args, cfg)
    pool, val, kodak = load_data(cfg, args, log)
    probe = rate_probe(cfg)
    trainer = make_trainer(backend, cfg, pool.arrays())
    state, loop = initial_state(cfg, args, log, trainer)
    compile_before_clock(trainer, state, val + kodak, log)
    run = TrainingRun(cfg, args, log, trainer, state, loop, val, kodak, probe)
    run.train()
    run.finish()
    run.export()
    return 0


if __name__ == "__main__":
    sys.exit(main())
