"""Bitstream v3's channel-wise autoregressive entropy model, as integers (parse is bit-exact).

y's M channels are coded as `num_slices` slices of S channels, in order. Slice i's mu and
log2 sigma are the integer hyper-synthesis outputs for its channels (models/intnet.py, Q8) plus
the output of a small integer conv net (3 x conv3x3, ReLU; the 'cc' net) that sees those hyper
outputs and the slices decoded before it. Decoded slices are carried as fixed-point y_hat_q (Q8):

    y_hat_q = clip(mu_q + rshift_round(s * D20[code], 12), +-ACT_MAX)     D20 = delta in Q20

where D20 comes from a literal 32-entry table, so no exp2 runs on the parse path. An optional
latent residual prediction net ('lrp') adds clip(out, +-128) (+-1/2 in Q8) to y_hat_q.

Why integers: slice i+1's scale indexes come from slice i's y_hat through a network. In float, a
1-ulp difference between CPU and GPU, thread counts or libraries could flip an index and
desynchronise the range decoder; with these integers it cannot. The arithmetic is intnet's:
power-of-two weight scales, Q8 activations clamped to 2^22, rounding right shifts, products and
sums exact in float64 BLAS because every partial sum is an integer below 2^53 (`check_bounds`).
tests/test_charm.py proves the BLAS, numpy int64 and TensorFlow float64 backends agree.

Range coding: one y substream for all slices; each slice's regular symbols are followed by that
slice's escapes (the layout of models/coding.py, per slice, with its own bound
`max_escapes(slice size)`), because slice i+1's contexts need slice i's escaped values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models import scale_table as S
from models.coding import CdfTable, RangeDecoder, RangeEncoder, max_escapes  # noqa: F401 - tests read charm.max_escapes
from models.intnet import ACC_LIMIT, ACT_FRAC, ACT_MAX, W_MAX, IntLayer, _conv_same, _rshift_round

LRP_MAX_Q = 1 << (S.Q - 1)        # LRP correction bound: 1/2 in Q8
SYMBOL_MAX = 1 << 15              # symbols are clamped to this before dequantising (as v2's dequantize)
DELTA_FRAC = 20
# round(2^(r/32) * 2^16), r = 0..31; a literal so no platform's exp2 enters the parse
# (tests/test_charm.py recomputes it in float64 and checks every entry).
_DELTA_Q16 = (65536, 66971, 68438, 69936, 71468, 73032, 74632, 76266, 77936, 79642, 81386, 83169, 84990, 86851,
              88752, 90696, 92682, 94711, 96785, 98905, 101070, 103283, 105545, 107856, 110218, 112631, 115098,
              117618, 120194, 122825, 125515, 128263)


def delta_q20(code: int) -> int:
    """Delta = 2^((code - 128)/32) in Q20, exactly from integers (code 0 .. 255)."""
    if not S.DELTA_CODE_MIN <= code <= S.DELTA_CODE_MAX:
        raise ValueError(f"delta code {code} outside 0..255")
    octave, r = divmod(code - S.DELTA_CODE_UNITY, S.DELTA_CODE_PER_OCTAVE)   # octave in -4..3
    return _DELTA_Q16[r] << (octave + DELTA_FRAC - 16)


def y_hat_q(symbols: np.ndarray, mu_q: np.ndarray, code: int) -> np.ndarray:
    """Decoded latents in Q8 from symbols and mu (Q8): what later slices and the synthesis see."""
    s = np.clip(np.asarray(symbols, np.int64), -SYMBOL_MAX, SYMBOL_MAX)
    step = _rshift_round(s * delta_q20(code), DELTA_FRAC - S.Q)
    return np.clip(np.asarray(mu_q, np.int64) + step, -ACT_MAX, ACT_MAX)


# -- integer conv nets ---

CHUNK_ROWS = 16          # output rows per im2col product: bounds the float64 intermediate (~120 MB at 8K)


def conv_same(x: np.ndarray, w: np.ndarray, dtype, rows: int = CHUNK_ROWS) -> np.ndarray:
    """Keras Conv2D('same', stride 1) as one im2col matrix product per band of output rows.

    Why not intnet._conv_same (one product per tap): with 9 taps of ~200 channels the products are
    small and the copies dominate; one (rows*w, k*k*cin) x (k*k*cin, cout) product is ~2-3x faster.
    Exactness does not depend on the summation order (every partial sum is an integer below 2^53).
    """
    kh, kw, cin, cout = w.shape
    h, wd, _ = x.shape
    pt, pl = (kh - 1) // 2, (kw - 1) // 2
    xp = np.zeros((h + kh - 1, wd + kw - 1, cin), dtype)
    xp[pt:pt + h, pl:pl + wd] = x
    wm = w.astype(dtype).reshape(kh * kw * cin, cout)
    out = np.empty((h, wd, cout), dtype)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        cols = np.empty((r1 - r0, wd, kh, kw, cin), dtype)
        for a in range(kh):
            for b in range(kw):
                cols[:, :, a, b] = xp[r0 + a:r1 + a, b:b + wd]
        out[r0:r1] = (cols.reshape(-1, kh * kw * cin) @ wm).reshape(r1 - r0, wd, cout)
    return out


class IntConvNet:
    """Stride-1 'same' integer convolutions on Q8 inputs (intnet's arithmetic, first layer in Q8 too)."""

    def __init__(self, layers: list[IntLayer]):
        if any(l.kind != "conv" or l.stride != 1 for l in layers):
            raise ValueError("slice networks are stride-1 convolutions")
        self.layers = layers
        self.check_bounds()

    @property
    def in_channels(self) -> int:
        return int(self.layers[0].weight.shape[2])

    @property
    def out_channels(self) -> int:
        return int(self.layers[-1].weight.shape[3])

    def check_bounds(self) -> None:
        """Refuse a network whose worst-case accumulator could reach 2^53 (inputs clamped to ACT_MAX)."""
        for i, l in enumerate(self.layers):
            taps = l.weight.shape[0] * l.weight.shape[1] * l.weight.shape[2]
            wmax = int(np.abs(l.weight).max(initial=0))
            worst = taps * ACT_MAX * wmax + int(np.abs(l.bias).max(initial=0))
            if worst >= ACC_LIMIT or wmax > W_MAX:
                raise ValueError(f"integer slice network layer {i} could overflow exact float64")

    def run(self, x_q: np.ndarray, backend: str = "blas") -> np.ndarray:
        """(h, w, Cin) Q8 ints -> (h, w, Cout) int64 at the last layer's scale (Q8).

        backend: 'blas' (float64 BLAS, what the codec runs), 'int64' (numpy integers), 'tf64'
        (TensorFlow float64 convolutions, an independent implementation); all agree exactly.
        """
        x = np.clip(np.asarray(x_q, np.int64), -ACT_MAX, ACT_MAX)
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"slice network takes {self.in_channels} channels, got {x.shape[-1]}")
        if backend == "tf64":
            return self._run_tf64(x)
        dtype = {"blas": np.float64, "int64": np.int64}[backend]
        a = x.astype(dtype)
        for l in self.layers:
            acc = (conv_same(a, l.weight, dtype) if backend == "blas" else _conv_same(a, l.weight, dtype)) \
                + l.bias.astype(dtype)
            if l.relu:
                acc = np.maximum(acc, 0)
            a = np.clip(_rshift_round(acc, l.in_frac + l.w_frac - l.out_frac), -ACT_MAX, ACT_MAX)
        return a.astype(np.int64)

    def _run_tf64(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf
        with tf.device("/CPU:0"):
            a = tf.constant(x[None], tf.float64)
            for l in self.layers:
                acc = tf.nn.conv2d(a, tf.constant(l.weight, tf.float64), 1, "SAME") + tf.constant(l.bias, tf.float64)
                if l.relu:
                    acc = tf.maximum(acc, 0.0)
                k = l.in_frac + l.w_frac - l.out_frac
                acc = tf.floor((acc + 2.0 ** (k - 1)) / 2.0 ** k) if k > 0 else acc * 2.0 ** -k
                a = tf.clip_by_value(acc, -ACT_MAX, ACT_MAX)
            return a.numpy()[0].astype(np.int64)

    def macs(self) -> int:
        """Multiply-accumulates per y position."""
        return sum(int(np.prod(l.weight.shape)) for l in self.layers)

    def to_arrays(self, prefix: str) -> tuple[list[dict], dict[str, np.ndarray]]:
        meta, arrays = [], {}
        for j, l in enumerate(self.layers):
            meta.append({"w_frac": l.w_frac, "in_frac": l.in_frac, "out_frac": l.out_frac, "relu": l.relu})
            arrays[f"{prefix}{j}_w"] = l.weight.astype(np.int16)
            arrays[f"{prefix}{j}_b"] = l.bias.astype(np.int64)
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: list[dict], arrays, prefix: str) -> IntConvNet:
        return cls([IntLayer("conv", 1, np.asarray(arrays[f"{prefix}{j}_w"], np.int64),
                             np.asarray(arrays[f"{prefix}{j}_b"], np.int64), **m) for j, m in enumerate(meta)])


def from_float(layers: list[tuple[str, np.ndarray, np.ndarray, bool]]) -> IntConvNet:
    """Quantise a float slice network given as (kind='conv', kernel (k, k, in, out), bias, relu) per layer.

    As intnet.from_float, except that the input is Q8 (mu, log2 sigma and y_hat in fixed point),
    so the first bias sits at 2^-(8 + w_frac).
    """
    out: list[IntLayer] = []
    in_frac = ACT_FRAC
    for kind, kernel, bias, relu in layers:
        if kind != "conv":
            raise ValueError("slice networks are stride-1 convolutions")
        w, b = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
        w_frac = min(int(np.floor(np.log2(W_MAX / max(np.abs(w).max(), 1e-12)))), 24)
        out.append(IntLayer("conv", 1, np.round(w * 2.0 ** w_frac).astype(np.int64),
                            np.round(b * 2.0 ** (in_frac + w_frac)).astype(np.int64), w_frac, in_frac, ACT_FRAC,
                            bool(relu)))
    return IntConvNet(out)


# -- the slice model -------------------------------------------------------------------------------------

@dataclass
class IntCharm:
    """The slice networks of one v3 model and the slice loop both encoder and decoder run."""

    num_slices: int
    slice_depth: int
    max_support: int                 # decoded slices a slice sees (-1: all before it)
    cc: list[IntConvNet]
    lrp: list[IntConvNet] | None = None

    def __post_init__(self):
        s = self.slice_depth
        if len(self.cc) != self.num_slices or (self.lrp is not None and len(self.lrp) != self.num_slices):
            raise ValueError("one network per slice")
        for i, net in enumerate(self.cc):
            seen = i if self.max_support < 0 else min(i, self.max_support)
            if net.in_channels != (2 + seen) * s or net.out_channels != 2 * s:
                raise ValueError(f"slice {i} network has the wrong width")
            if self.lrp is not None and (self.lrp[i].in_channels != (3 + seen) * s or self.lrp[i].out_channels != s):
                raise ValueError(f"slice {i} LRP network has the wrong width")

    @property
    def latent_channels(self) -> int:
        return self.num_slices * self.slice_depth

    def _support(self, i: int, mu_h_q, ls_h_q, decoded: list) -> np.ndarray:
        sl = slice(i * self.slice_depth, (i + 1) * self.slice_depth)
        seen = decoded if self.max_support < 0 else decoded[:self.max_support]
        return np.concatenate([mu_h_q[..., sl].astype(np.int64), ls_h_q[..., sl].astype(np.int64)] + seen, axis=-1)

    def slice_params(self, i: int, mu_h_q: np.ndarray, ls_h_q: np.ndarray, decoded: list,
                     backend: str = "blas") -> tuple[np.ndarray, np.ndarray]:
        """(mu_q, log2 sigma_q) of slice i, Q8 int32, from the hyper outputs and the y_hat_q of slices < i."""
        s = self.slice_depth
        sl = slice(i * s, (i + 1) * s)
        o = self.cc[i].run(self._support(i, mu_h_q, ls_h_q, decoded), backend)
        mu = np.clip(mu_h_q[..., sl].astype(np.int64) + o[..., :s], -ACT_MAX, ACT_MAX)
        ls = np.clip(ls_h_q[..., sl].astype(np.int64) + o[..., s:], S.LOG2_MIN_Q, S.LOG2_MAX_Q)
        return mu.astype(np.int32), ls.astype(np.int32)

    def decoded_slice(self, i: int, symbols, mu_q, code: int, mu_h_q, ls_h_q, decoded: list,
                      backend: str = "blas") -> np.ndarray:
        """y_hat_q of slice i (int64, Q8), LRP applied: what later slices see and the synthesis gets."""
        yq = y_hat_q(symbols, mu_q, code)
        if self.lrp is not None:
            r = self.lrp[i].run(np.concatenate([self._support(i, mu_h_q, ls_h_q, decoded), yq], axis=-1), backend)
            yq = np.clip(yq + np.clip(r, -LRP_MAX_Q, LRP_MAX_Q), -ACT_MAX, ACT_MAX)
        return yq

    def loop(self, mu_h_q: np.ndarray, ls_h_q: np.ndarray, code: int,
             symbols_of: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
             backend: str = "blas") -> SliceResult:
        """The slice loop: for each slice, integer mu/sigma -> scale index -> symbols_of(i, index, mu_q) -> y_hat_q.

        symbols_of is the range decoder (decoder) or the quantiser (encoder); everything else is shared,
        so the encoder computes exactly what the decoder will.
        """
        if mu_h_q.shape[-1] != self.latent_channels:
            raise ValueError(f"hyper output has {mu_h_q.shape[-1]} channels, the slices need {self.latent_channels}")
        decoded, mus, idxs, syms = [], [], [], []
        for i in range(self.num_slices):
            mu_q, ls_q = self.slice_params(i, mu_h_q, ls_h_q, decoded, backend)
            idx = S.scale_index(ls_q, code)
            sym = np.asarray(symbols_of(i, idx, mu_q), np.int32)
            decoded.append(self.decoded_slice(i, sym, mu_q, code, mu_h_q, ls_h_q, decoded, backend))
            mus.append(mu_q)
            idxs.append(idx)
            syms.append(sym)
        cat = lambda a: np.concatenate(a, axis=-1)   # noqa: E731
        return SliceResult(cat(mus), cat(idxs), cat(syms), cat(decoded))

    def macs_per_pixel(self) -> float:
        """Slice-network multiply-accumulates per image pixel (a y position covers 16 x 16 pixels)."""
        nets = self.cc + (self.lrp or [])
        return sum(n.macs() for n in nets) / 256

    # -- storage ---------------------------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"num_slices": self.num_slices, "slice_depth": self.slice_depth, "max_support": self.max_support,
                "lrp": self.lrp is not None, "cc": [], "lrp_layers": []}
        arrays: dict[str, np.ndarray] = {}
        for i, net in enumerate(self.cc):
            m, a = net.to_arrays(f"cc{i}_")
            meta["cc"].append(m)
            arrays.update(a)
        for i, net in enumerate(self.lrp or []):
            m, a = net.to_arrays(f"lrp{i}_")
            meta["lrp_layers"].append(m)
            arrays.update(a)
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: dict, arrays) -> IntCharm:
        n = int(meta["num_slices"])
        cc = [IntConvNet.from_arrays(meta["cc"][i], arrays, f"cc{i}_") for i in range(n)]
        lrp = [IntConvNet.from_arrays(meta["lrp_layers"][i], arrays, f"lrp{i}_") for i in range(n)] if meta["lrp"] else None
        return cls(n, int(meta["slice_depth"]), int(meta["max_support"]), cc, lrp)


@dataclass
class SliceResult:
    mu_q: np.ndarray        # (h, w, M) int32, Q8: each slice's mu
    scale_idx: np.ndarray   # (h, w, M) int32
    symbols: np.ndarray     # (h, w, M) int32, as coded
    y_hat_q: np.ndarray     # (h, w, M) int64, Q8: the decoded latents (LRP applied)

    def y_hat(self) -> np.ndarray:
        """Float32 latents for the synthesis."""
        return y_hat_float(self.y_hat_q)


def y_hat_float(y_hat_q: np.ndarray) -> np.ndarray:
    """Q8 latents -> float32 for the synthesis (exact: |y_hat_q| <= 2^22 fits float32's 24 bits)."""
    return (np.asarray(y_hat_q, np.float64) / (1 << S.Q)).astype(np.float32)


# -- model files -----------------------------------------------------------------------------------------

BITSTREAM_VERSION = 3    # what a model with slice networks writes; models/weights.py stores them in its decoder file


# -- one range-coded y substream, slice after slice ------------------------------------------------------

class SliceEncoder(RangeEncoder):
    """Codes slices into one substream: each slice's regular symbols, then that slice's escapes."""

    not_clamped = "slice symbols not clamped; use SliceEncoder.clamp first"

    def clamp(self, symbols: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        """One slice's symbols as they will be coded (escape reach and the slice's escape budget)."""
        return self.table.clamp(symbols, indexes)


class SliceDecoder(RangeDecoder):
    """Inverse of SliceEncoder; every slice is bounded (index range, escape budget) before its work."""

    too_many = "{n_esc} escapes in a slice of {n} symbols (limit {limit})"


# -- the codec's two halves of the slice loop --------------------------------------------------------------

def parse_slices(net: IntCharm, y_bytes: bytes, y_table: CdfTable, mu_h_q: np.ndarray, ls_h_q: np.ndarray,
                 code: int) -> SliceResult:
    """Decoder: the y substream -> symbols and y_hat_q, slice by slice; raises CorruptStream on a bad stream."""
    dec = SliceDecoder(y_bytes, y_table)
    res = net.loop(mu_h_q, ls_h_q, code, lambda i, idx, mu_q: dec.take(idx))
    dec.finish()
    return res


def quantise_slices(net: IntCharm, y: np.ndarray, y_table: CdfTable, mu_h_q: np.ndarray, ls_h_q: np.ndarray,
                    code: int, coder: SliceEncoder | None = None) -> SliceResult:
    """Encoder: y (float) -> the symbols as coded (clamped per slice) and the decoder's y_hat_q.

    With a coder, each slice is also range-coded as it is quantised (`coder.finish()` gives the substream).
    """
    delta = np.float32(S.delta(code))
    s_ = net.slice_depth
    clamp = coder.clamp if coder is not None else y_table.clamp

    def quantise(i: int, idx: np.ndarray, mu_q: np.ndarray) -> np.ndarray:
        mu = mu_q.astype(np.float32) / np.float32(1 << S.Q)
        sym = clamp(np.clip(np.round((y[..., i * s_:(i + 1) * s_] - mu) / delta), -(1 << 30), 1 << 30), idx)
        if coder is not None:
            coder.add(sym, idx)
        return sym
    return net.loop(mu_h_q, ls_h_q, code, quantise)


def code_slices(net: IntCharm, y: np.ndarray, y_table: CdfTable, mu_h_q: np.ndarray, ls_h_q: np.ndarray,
                code: int) -> tuple[SliceResult, bytes]:
    """Encoder: (what the decoder will parse, the y substream)."""
    coder = SliceEncoder(y_table)
    res = quantise_slices(net, y, y_table, mu_h_q, ls_h_q, code, coder)
    return res, coder.finish()
