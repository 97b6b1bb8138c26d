"""The training campaign: python -m training.campaign [--hours H] | gate NAME [--export]

Works down training/campaign.yaml, one training.train process at a time, niced, until the
hours are spent or SIGTERM (forwarded to the trainer, which saves). Each job resumes its
state in --state-dir and stops at its `until` step. After each stint it appends a row to
the campaign log (training/campaign.csv): date, CPU, backend, dtype, model, steps from and
to, CPU-hours, held-out coded bpp and PSNR-RGB at delta = 1, and whether it was exported.

`gate NAME` decides whether a trained state replaces the shipped model (training/gate.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from models import cpu
from models.cli import ArgumentParser, one_line_errors

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "training" / "campaign.yaml"
from training.gate import LOG  # noqa: E402 - one owner of the log's path

COLUMNS = ["date", "cpu", "backend", "dtype", "model", "step_from", "step_to", "cpu_hours", "heldout_bpp",
           "heldout_psnr", "exported"]


def load_plan(path: Path) -> dict:
    plan = yaml.safe_load(Path(path).read_text())
    for job in plan["jobs"]:
        for key in ("name", "config", "until", "lr", "decay_from"):
            if key not in job:
                raise ValueError(f"campaign job {job.get('name', '?')}: missing {key!r}")
        job["lr"] = float(job["lr"])
    return plan


def state_step(state_dir: Path, runs_dir: Path, name: str) -> int:
    """Where a job stands: its run checkpoint if newer, else its committed state."""
    from training import checkpoint, state
    steps = [0]
    ckpt = runs_dir / name / "ckpt"
    if checkpoint.exists(ckpt):
        steps.append(int(json.loads((ckpt / "meta.json").read_text())["step"]))
    path = state_dir / f"{name}.npz"
    if path.exists():
        steps.append(int(state.read_meta(path)["step"]))
    return max(steps)


def train_command(job: dict, settings: dict, args, seconds: float) -> list[str]:
    """The training.train command for one stint of a job."""
    frac = min(1.0, job["decay_from"] / job["until"])
    return [sys.executable, "-m", "training.train", "--config", str(ROOT / job["config"]),
            "--set", f"steps={job['until']}", "--set", f"lr={job['lr']}", "--set", f"lr_decay_at=[{frac}]",
            "--set", f"compute_dtype={settings.get('compute_dtype', 'auto')}",
            "--backend", settings.get("backend", "auto"), "--out", str(Path(args.runs_dir) / job["name"]),
            "--state-dir", str(args.state_dir), "--max-seconds", str(int(seconds)), "--no-export", "--no-progress",
            "--kodak", "", "--checkpoint-seconds", str(60 * settings.get("checkpoint_minutes", 10))]


def heldout(params: dict, cfg) -> tuple[float, float]:
    """Held-out coded bpp and PSNR-RGB at delta = 1 (the training photographs' held-out split, 256-px crops)."""
    from training.data import center_crop, list_images, load_rgb, split_holdout
    from training.validate import coded_stats
    _, val = split_holdout(list_images(cfg.train_dir), cfg.holdout_every)
    stats = coded_stats(params, [center_crop(load_rgb(f), cfg.val_crop) for f in val])
    return stats.mean_bpp, float(np.mean(stats.psnr))


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)


def log_stint(args, job: dict, step_from: int, cpu_seconds: float) -> dict:
    """The campaign log's row for one stint, measured on the state it left. `cpu_seconds` is the trainer's own
    CPU time (user + system): on a machine shared with foreground work, wall time x cores overstates it."""
    from training import config as C
    from training import state
    params, meta = state.load(Path(args.state_dir) / f"{job['name']}.npz")
    cfg = C.load(ROOT / job["config"])
    run = (meta.get("runs") or [{}])[-1]
    bpp, psnr = heldout(params, cfg)
    first = (meta.get("lineage") or [{}])[0]
    if step_from == 0 and ("widened" in first or first.get("branched")):   # a branch's first stint starts where
        step_from = int(first["step"])                                       # its parent stood
    row = {"date": datetime.date.today().isoformat(), "cpu": cpu.model(), "backend": run.get("backend", "jax"),
           "dtype": run.get("compute_dtype", ""), "model": job["name"], "step_from": step_from,
           "step_to": meta["step"], "cpu_hours": round(cpu_seconds / 3600, 3),
           "heldout_bpp": round(bpp, 4), "heldout_psnr": round(psnr, 3), "exported": "no"}
    append_row(Path(args.log), row)
    return row


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of the children this process has waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Campaign:
    """The loop over the plan; SIGTERM/SIGINT go to the running trainer, which saves, and end the campaign."""

    def __init__(self, args):
        self.args, self.plan = args, load_plan(Path(args.plan))
        self.settings = self.plan.get("settings", {})
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.deadline = time.time() + 3600 * args.hours

    def _signal(self, signum, _frame) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def say(self, msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        nice = int(self.settings.get("nice", 19))
        jobs = [j for j in self.plan["jobs"] if not self.args.only or j["name"] in self.args.only]
        for job in jobs:
            step = state_step(Path(self.args.state_dir), Path(self.args.runs_dir), job["name"])
            left = self.deadline - time.time()
            if self.stopping or left < 60 * self.settings.get("min_minutes", 3):
                break
            if step >= job["until"]:
                self.say(f"{job['name']}: done (step {step} of {job['until']})")
                continue
            self.say(f"{job['name']}: step {step} -> {job['until']}, {left / 60:.0f} min left")
            cmd = train_command(job, self.settings, self.args, left - 90)    # 90 s: the last save and row
            if self.args.dry_run:
                print(" ".join(cmd))
                continue
            before = _children_cpu_seconds()
            with open(Path(self.args.runs_dir) / f"{job['name']}.out", "a") as out:
                self.child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                              preexec_fn=lambda: os.nice(nice))
                rc = self.child.wait()
            self.child = None
            cpu_seconds = _children_cpu_seconds() - before
            if rc != 0:
                self.say(f"{job['name']}: trainer exited {rc}; see {self.args.runs_dir}/{job['name']}.out")
                return rc
            row = log_stint(self.args, job, step, cpu_seconds)
            self.say(f"{job['name']}: step {row['step_from']} -> {row['step_to']}, held-out "
                     f"{row['heldout_bpp']} bpp {row['heldout_psnr']} dB ({row['backend']}, {row['dtype']})")
        return 0


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m training.campaign", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", default=str(PLAN), help="the campaign plan (YAML)")
    p.add_argument("--hours", type=float, default=2.5, help="stop after this many hours (wall clock)")
    p.add_argument("--only", nargs="*", default=[], help="train only these jobs of the plan")
    p.add_argument("--state-dir", default=str(ROOT / "models" / "checkpoints"), help="the resume states")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "campaign"), help="run folders and trainer output")
    p.add_argument("--log", default=str(LOG), help="the campaign log (CSV)")
    p.add_argument("--dry-run", action="store_true", help="print the trainer commands, train nothing")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["gate"]:
        from training.gate import main as gate_main
        return gate_main(argv[1:])
    args = p.parse_args(argv)
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    return one_line_errors("training.campaign", lambda: Campaign(args).run())


if __name__ == "__main__":
    sys.exit(main())
