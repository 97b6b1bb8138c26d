"""The synthesis in JAX: the decoder's optional `--backend jax`, for GPUs without TensorFlow.

Why: the lent accelerator has JAX with CUDA but no TensorFlow, and CPU/GPU decode parity
had never been measured on a GPU. The parse (range decoding, the integer hyper-synthesis,
the CDF tables) is the same as the TF path and stays integer; only the float synthesis runs
here, on whatever device JAX finds, with the same weights (models/jax_transforms.py, pinned
to the Keras layers by tests/test_jax_parity.py).

Reduced-precision matmuls are off: TF32 would move pixels by far more than rounding.
`configure()` sets that before JAX starts, and `settings()` reports it for the parity check.
"""

from __future__ import annotations

import os

import numpy as np

BACKEND = "jax"


def configure() -> None:
    """Full fp32 convolutions on any GPU: no TF32 (cuBLAS/cuDNN and XLA), before JAX initialises."""
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")


def settings() -> dict:
    """What the parity report prints: the device JAX decodes on and the matmul precision in force."""
    import jax
    d = jax.devices()[0]
    return {"backend": BACKEND, "jax": jax.__version__, "platform": d.platform,
            "device": getattr(d, "device_kind", d.platform),
            "matmul_precision": _precision(),
            "tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE")}


def _precision() -> str:
    """The matmul precision in force, read in a way both jax 0.4 (here) and 0.11 (the accelerator) answer."""
    import jax
    try:
        return str(jax.config.jax_default_matmul_precision)
    except AttributeError:
        return str(getattr(jax.config, "values", {}).get("jax_default_matmul_precision"))


class JaxSynthesis:
    """models.synthesis.Synthesis's interface (weights in Keras order; y (1, h, w, M) -> (1, 16h, 16w, 3))."""

    backend = BACKEND

    def __init__(self, weights: list[np.ndarray], num_filters: int, latent_channels: int):
        configure()
        import jax

        from models import jax_transforms as J
        keys = [k for k, _ in J.layout(num_filters, latent_channels) if k.startswith("synthesis/")]
        if len(keys) != len(weights):
            raise ValueError(f"synthesis has {len(weights)} tensors, N={num_filters} needs {len(keys)}")
        self.params = {k: jax.device_put(np.asarray(w, np.float32)) for k, w in zip(keys, weights)}
        self._fn = jax.jit(J.synthesis)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(self.params, np.asarray(y, np.float32)))
