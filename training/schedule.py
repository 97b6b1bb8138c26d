"""The learning-rate schedule, one definition for both training steps."""

from __future__ import annotations


def learning_rate(cfg, step, adam_count=None, xp=None):
    """Warm-up, then 10x drops at the `lr_decay_at` fractions of `steps`. The drops follow the run's step
    counter, which survives a resume from a committed state; the warm-up follows Adam's own count
    (`adam_count`, default: the step), which restarts there with fresh moments. Without that second
    warm-up the first step after such a resume took the base's Kodak estimate from 31.03 to 26.66 dB
    (CHANGELOG.md). `xp` is the array module: jax.numpy inside the JAX step (default), numpy for TF's host."""
    if xp is None:
        import jax.numpy as xp
    s = xp.asarray(step).astype(xp.float32)
    w = s if adam_count is None else xp.minimum(s, xp.asarray(adam_count).astype(xp.float32))
    lr = cfg.lr * xp.minimum(1.0, (w + 1) / max(1, cfg.warmup_steps))
    for frac in cfg.lr_decay_at:
        lr = xp.where(s >= frac * cfg.steps, lr * 0.1, lr)
    return lr
