"""Real coded rate during training, and the automatic R_t / beta correction.

The noisy-latent rate the loss sees is not the coded rate: at low rates the
coded file is larger (header, z, quantisation of tiny sigmas; Guerin et al.
Fig. 2). So after each validation round we export the model as the codec
would ship it, code the held-out images at delta = 1 with the real encoder,
and steer the training target from what the files actually measure.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class CodedStats:
    bpp: list[float]
    psnr: list[float]

    @property
    def mean_bpp(self) -> float:
        return float(np.mean(self.bpp))

    @property
    def spread(self) -> float:
        """Relative spread of per-image rates (std / mean)."""
        return float(np.std(self.bpp) / max(np.mean(self.bpp), 1e-9))

    def as_dict(self) -> dict:
        return {"coded_bpp_mean": self.mean_bpp, "coded_bpp_min": float(np.min(self.bpp)),
                "coded_bpp_max": float(np.max(self.bpp)), "coded_spread": self.spread,
                "coded_psnr": float(np.mean(self.psnr))}


def tf_available() -> bool:
    """The coded probe needs the codec runtime (TF + tfc); the accelerator machine has none."""
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tensorflow_compression"))


def coded_stats(params, images: list[np.ndarray]) -> CodedStats:
    """Export to a temp dir, then encode at delta = 1 and decode with the shipped code path."""
    from decoder.decode import ModelCache, decode_bytes
    from encoder.encode import EncoderModels
    from evaluation.metrics import psnr
    from models.scale_table import DELTA_CODE_UNITY
    from training.export import export, register
    params = {k: np.asarray(v) for k, v in params.items()}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = export(params, "val", out_dir=Path(tmp))
        reg = Path(tmp) / "registry.yaml"
        register(reg, prefix, "val", [0.5], trained=False)
        models = EncoderModels(str(reg))
        entry = models.distinct_entries()[0]
        enc = models.encoder_model(entry)
        dec = ModelCache(str(reg))
        bpps, psnrs = [], []
        for img in images:
            data = enc.analyse(img).code(DELTA_CODE_UNITY, entry.target_index)
            rec = decode_bytes(data, dec)
            bpps.append(8 * len(data) / (img.shape[0] * img.shape[1]))
            psnrs.append(psnr(img, rec))
    return CodedStats(bpps, psnrs)


def adjust(train_target: float, beta: float, challenge_target: float, stats: CodedStats,
           max_spread: float = 0.25, gain: float = 1.0, beta_max: float = float("inf")) -> tuple[float, float, str]:
    """The paper's manual heuristic, automated.

    Mean off target -> move the training R_t by the (relative) error, so the
    coded mean drifts onto the challenge target. Spread too wide -> double beta,
    which tightens the rate around R_t, up to beta_max (measured: with the batch-mean
    loss, t025's spread stayed 0.33-0.34 while beta went 200 -> 1600; models/README.md).
    Returns (new R_t, new beta, reason).
    """
    err = stats.mean_bpp / challenge_target - 1.0
    new_target = train_target * (1.0 - gain * err)
    new_target = float(np.clip(new_target, 0.25 * challenge_target, 4 * challenge_target))
    new_beta, why = beta, f"coded mean {stats.mean_bpp:.4f} ({err * 100:+.1f} %)"
    if stats.spread > max_spread and beta < beta_max:
        new_beta = min(beta * 2.0, beta_max)
        why += f", spread {stats.spread:.2f} > {max_spread:.2f}: beta x2 (cap {beta_max:g})"
    return new_target, new_beta, why
