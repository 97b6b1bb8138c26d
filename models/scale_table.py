"""The quantiser and scale table: the one place that owns these integers.

Everything the range decoder's parse depends on is an integer defined here:
- sigma is carried as log2(sigma) in Q8 fixed point (units of 1/256);
- the table has NUM_SCALES entries, log2(sigma_k) = LOG2_MIN + k/8;
- the quantiser step is delta = 2^((code - DELTA_CODE_UNITY) / DELTA_CODE_PER_OCTAVE),
  so 256*log2(delta) is the integer (code - 128) * 8 and the index of sigma/delta
  is pure integer arithmetic. No exp/log runs on the parse path.
"""

from __future__ import annotations

import numpy as np

Q = 8                                # fixed-point fraction bits of mu and log2(sigma)
LOG2_MIN_Q = -832                    # log2(sigma_0) = -3.25   (sigma_0 ~ 0.105)
STEP_Q = 32                          # 1/8 octave between entries (~9 % in sigma)
NUM_SCALES = 96                      # log2(sigma_95) = 8.625  (sigma ~ 395)
LOG2_MAX_Q = LOG2_MIN_Q + STEP_Q * (NUM_SCALES - 1)

DELTA_CODE_BITS = 8
DELTA_CODE_UNITY = 128               # code 128 is delta = 1, the training step
DELTA_CODE_PER_OCTAVE = 32           # 1/32 octave (~2.2 %) per code step
DELTA_CODE_MIN, DELTA_CODE_MAX = 0, (1 << DELTA_CODE_BITS) - 1

LOG2_SCALE_MIN = LOG2_MIN_Q / (1 << Q)
LOG2_SCALE_MAX = LOG2_MAX_Q / (1 << Q)

RANGE_CODER_PRECISION = 16
TAIL_MASS = 2.0 ** -12            # tables cover all but this mass; latents beyond escape (models/coding.py)


def sigmas() -> np.ndarray:
    """The table's scales, in units of the quantiser step (float64)."""
    return np.exp2((LOG2_MIN_Q + STEP_Q * np.arange(NUM_SCALES)) / (1 << Q))


def delta(code: int) -> float:
    return float(2.0 ** ((code - DELTA_CODE_UNITY) / DELTA_CODE_PER_OCTAVE))


def delta_q(code: int) -> int:
    """256*log2(delta), exactly."""
    return (code - DELTA_CODE_UNITY) * ((1 << Q) // DELTA_CODE_PER_OCTAVE)


def scale_index(log2_sigma_q: np.ndarray, code: int) -> np.ndarray:
    """Nearest table entry (in log) to sigma/delta, from integers only."""
    v = np.asarray(log2_sigma_q, np.int64) - delta_q(code)
    idx = np.floor_divide(v - LOG2_MIN_Q + STEP_Q // 2, STEP_Q)
    return np.clip(idx, 0, NUM_SCALES - 1).astype(np.int32)


def dequantize(symbols: np.ndarray, mu_q: np.ndarray, delta_code: int) -> np.ndarray:
    """v2's y_hat = s * delta + mu in float32: what the encoder reconstructs and the decoder synthesises."""
    mu = mu_q.astype(np.float32) / np.float32(1 << Q)
    # A crafted stream can carry huge overflow-coded symbols; clamp so the float stage stays finite.
    s = np.clip(symbols, -(1 << 15), 1 << 15).astype(np.float32)
    return s * np.float32(delta(delta_code)) + mu
