"""Training configs: one YAML per model, layered over a base via `inherit:`.

Every parameter is declared once here, with its default and help text; a YAML
file only overrides. Command-line `--set key=value` overrides the YAML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from evaluation.datasets import TRAIN


def _p(default: Any, help: str) -> Any:  # noqa: A002 - 'help' mirrors argparse
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    name: str = _p("base", "run name: checkpoints go to runs/<name>, exports to models/weights/<name>")
    num_filters: int = _p(128, "N: filters of every transform, and hyper-latent channels")
    latent_channels: int = _p(192, "M: latent channels of y")
    loss: str = _p("lambda", "'lambda' (D + lambda*R) or 'guerin' (D + beta*((R_t-R)/R_t)^2)")
    lmbda: float = _p(0.01, "rate-distortion trade-off of the 'lambda' loss (MSE on 0..255)")
    beta: float = _p(100.0, "rate-constraint weight of the 'guerin' loss")
    target_bpp: float = _p(0.5, "R_t of the 'guerin' loss; the challenge target this model serves")
    quantization: str = _p("noise", "what g_s/h_s see in training: 'noise' (fast from scratch) or 'ste' "
                                    "(straight-through rounding, no train/test mismatch; for fine-tuning)")
    delta_range: list = _p([1.0, 1.0], "quantiser steps (lo, hi) g_s is trained at: each step's delta is drawn "
                                       "log-uniform from them (training/data.py step_delta); rates stay at delta 1, "
                                       "so the rate constraint and R_t mean what they meant")
    mse_weight: float = _p(1.0, "weight of MSE (0..255 scale) in D")
    msssim_weight: float = _p(0.0, "weight of (1 - MS-SSIM) in D")
    steps: int = _p(200000, "total optimiser steps (resumed runs continue to this)")
    batch: int = _p(8, "crops per step (global, split across devices)")
    patch: int = _p(128, "crop size in pixels")
    lr: float = _p(3e-4, "peak learning rate (Adam)")
    warmup_steps: int = _p(500, "linear learning-rate warm-up")
    lr_decay_at: list = _p([0.8, 0.95], "fractions of `steps` where the rate drops 10x")
    clipnorm: float = _p(1.0, "global gradient-norm clip; 0 disables")
    train_dir: str = _p(str(TRAIN), "training photographs (JPEG/WebP/PNG)")
    holdout_every: int = _p(30, "1 in this many training images (by name hash) is held out for validation")
    seed: int = _p(1, "seed for crops and initialisation")
    init_from: str = _p("", "resume-state .npz to initialise from (fine-tuning a base model)")
    init_widen: bool = _p(False, "widen a narrower init_from to num_filters x latent_channels, function-preserving "
                                 "(training/widen.py), and go on from its step, R_t and beta")
    init_continue: bool = _p(False, "go on from init_from's step, R_t, beta and curve (a branch of that run, e.g. "
                                    "another delta_range) instead of a fine-tune from step 0")
    checkpoint_every: int = _p(500, "steps between checkpoints")
    validate_every: int = _p(2000, "steps between validation passes")
    val_crop: int = _p(256, "held-out images are centre-cropped to this size for validation")
    auto_rate: bool = _p(False, "after each validation, shift target_bpp / raise beta from the coded bpp at delta=1")
    beta_max: float = _p(800.0, "auto_rate doubles beta at most up to this: the loss constrains the batch mean, "
                                "so a wide per-image spread (which the delta knob absorbs) never narrows")

    max_side: int = _p(1280, "training images are downscaled to at most this side when loaded")
    rate_probe: str = _p("auto", "validation rate: 'coded' (export + real encoder, needs TF), 'estimated' "
                                 "(rounded latents' likelihoods, JAX only) or 'auto' (coded where TF is installed)")
    compute_dtype: str = _p("float32", "conv compute type of analysis/synthesis: 'float32', 'bfloat16', or "
                                         "'auto' (bfloat16 where the CPU has it natively and the step is TF's)")
    model: str = _p("meanscale", "entropy model: 'meanscale' (bitstream v2) or 'charm' (v3: channel-wise "
                                 "autoregressive slices, training/charm.py); charm starts from init_from/the state")
    charm_slices: int = _p(8, "charm: number of y slices (latent_channels must split evenly)")
    charm_hidden: int = _p(32, "charm: hidden width of each slice's mu/sigma (and LRP) network (32: decode within 1.5x of v2)")
    charm_lrp: bool = _p(False, "charm: latent residual prediction (clipped to +-1/2)")

    @classmethod
    def help_text(cls) -> str:
        def default(f):
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()
        return "\n".join(f"  {f.name} (default {default(f)}): {f.metadata['help']}"
                         for f in fields(cls))


def load(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    values: dict[str, Any] = {}
    if path:
        values = _read_layered(Path(path))
    for item in overrides:
        key, _, raw = item.partition("=")
        values[key] = yaml.safe_load(raw)
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    types = {f.name: f.type for f in fields(TrainConfig)}
    for key, value in values.items():      # YAML 1.1 reads "3e-4" as a string: coerce to the declared type
        if types[key] in ("float", float) and isinstance(value, (str, int)) and not isinstance(value, bool):
            values[key] = float(value)
        elif types[key] in ("int", int) and isinstance(value, (str, float)):
            values[key] = int(float(value))
    cfg = TrainConfig(**values)
    lo, hi = (float(v) for v in cfg.delta_range) if len(cfg.delta_range) == 2 else (0.0, -1.0)
    if not 0 < lo <= hi:
        raise ValueError(f"delta_range must be two steps 0 < lo <= hi, got {cfg.delta_range}")
    return cfg


def _read_layered(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    parent = data.pop("inherit", None)
    if parent:
        base = _read_layered(path.parent / parent)
        base.update(data)
        data = base
    return data
