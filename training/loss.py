"""The training losses, written once for both backends (plain arithmetic on their tensors)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loss:
    """'lambda': R + lambda*D.  'guerin': D + beta*((R_t - R)/R_t)^2 (Guerin et al.), R_t and beta traced.

    D is MSE on the 0..255 scale times `mse_weight`, plus `msssim_weight`*(1 - MS-SSIM).
    """

    kind: str = "lambda"
    lmbda: float = 0.01
    mse_weight: float = 1.0
    msssim_weight: float = 0.0

    def __post_init__(self):
        if self.kind not in ("lambda", "guerin"):
            raise ValueError(f"unknown loss kind {self.kind!r}")

    def __call__(self, out: dict, x, target_bpp, beta, ms_ssim=None):
        """The loss of a forward pass `out`; `ms_ssim(x, x_hat) -> mean MS-SSIM` is the backend's (JAX's
        training.msssim by default)."""
        d = self.mse_weight * out["mse"]
        if self.msssim_weight:
            if ms_ssim is None:
                from training.msssim import mean_ms_ssim as ms_ssim
            d = d + self.msssim_weight * (1.0 - ms_ssim(x, out["x_hat"]))
        if self.kind == "lambda":
            return out["bpp"] + self.lmbda * d
        rel = (target_bpp - out["bpp"]) / target_bpp
        return d + beta * rel * rel
