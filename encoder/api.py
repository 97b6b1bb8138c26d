"""Library entry point for other tools (evaluation, conformance, benchmarks)."""

from __future__ import annotations

import numpy as np

from rate_control.search import DEFAULT_AIM, Choice, Unreachable, search


class Encoder:
    """Holds the model cache so that batch work pays TensorFlow start-up once."""

    def __init__(self, registry: str | None = None, aim: float = DEFAULT_AIM, refine: int = 0,
                 refine_dtype: str = "auto"):
        """`refine`: latent-refinement steps after the rate search (encoder/refine.py); 0 is off, the fast
        mode tools use. The CLI's default is encoder.refine.DEFAULT_ITERS. `refine_dtype`: "auto", "float32"
        or "bfloat16", the refinement's convolutions (encoder.refine.resolve_dtype)."""
        from encoder.encode import EncoderModels
        from models.runtime import configure
        configure()
        self.models = EncoderModels(registry)
        self.models.refine_dtype = refine_dtype
        self.aim = aim
        self.refine = refine

    def encode(self, rgb: np.ndarray, target: float, best_effort: bool = True) -> Choice:
        """Rate-controlled stream; with best_effort an unreachable target returns the closest stream."""
        try:
            return search(rgb, target, self.models, self.aim, refine=self.refine)
        except Unreachable as e:
            if best_effort:
                return e.best
            raise

    def encode_fixed(self, rgb: np.ndarray, model_index: int, delta_code: int) -> bytes:
        """No search: one model, one step (for benchmarks and tests)."""
        entry = self.models.distinct_entries()[model_index]
        return self.models.encoder_model(entry).analyse(rgb).code(delta_code, entry.target_index)
