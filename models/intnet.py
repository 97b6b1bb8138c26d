"""Integer hyper-synthesis: z_hat (int) -> mu (Q8) and log2 sigma (Q8), bit-exactly.

Why: the scale index decides how the range decoder parses y. If it came from a
float network, a 1-ulp difference between CPU and GPU, thread counts or oneDNN
on/off could flip an index and desynchronise the decoder (tfc #44/#147,
CompressAI #279/#320). Here every value is an integer:

- weights are int (|w| < 2^15) with a per-layer power-of-two scale 2^-w_frac;
- activations are int with a fixed scale 2^-ACT_FRAC, clamped to |a| <= 2^22;
- a layer's accumulator is sum(a*w) + bias, at scale 2^-(in_frac + w_frac);
- re-scaling is floor((acc + 2^(k-1)) / 2^k): a rounding right shift.

Products and sums are computed in float64 by BLAS. With the clamps above every
partial sum is an integer below 2^53 (kernel taps <= 4800 -> |acc| < 2^50), so
float64 represents it exactly and the result cannot depend on summation order,
FMA, threads or vendor library. The int64 backend computes the same with numpy
integers and is what the tests compare against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from models import scale_table

ACT_FRAC = 8
ACT_MAX = 1 << 22
W_MAX = (1 << 15) - 1
Z_MAX = 1 << 12          # |z_hat| is clamped: hostile streams may carry huge overflow values
ACC_LIMIT = 1 << 53
BAND_ROWS = 16           # z rows per band: bounds the float64 intermediates (~1.5 GiB less at 8K)
BAND_HALO = 3            # z rows of context per side; the net reaches 2 (tests/test_intnet.py checks)


@dataclass
class IntLayer:
    kind: str            # 'conv' (stride 1) or 'deconv' (transposed, stride 2)
    stride: int
    weight: np.ndarray   # int64, (kh, kw, cin, cout)
    bias: np.ndarray     # int64, at scale 2^-(in_frac + w_frac)
    w_frac: int
    in_frac: int
    out_frac: int
    relu: bool


def _conv_same(x: np.ndarray, w: np.ndarray, dtype) -> np.ndarray:
    kh, kw, cin, cout = w.shape
    h, wd, _ = x.shape
    pt, pl = (kh - 1) // 2, (kw - 1) // 2
    xp = np.zeros((h + kh - 1, wd + kw - 1, cin), dtype)
    xp[pt:pt + h, pl:pl + wd] = x
    acc = np.zeros((h * wd, cout), dtype)
    for a in range(kh):
        for b in range(kw):
            acc += xp[a:a + h, b:b + wd].reshape(-1, cin) @ w[a, b].astype(dtype)
    return acc.reshape(h, wd, cout)


def _deconv_same(x: np.ndarray, w: np.ndarray, stride: int, dtype) -> np.ndarray:
    """Matches tf.keras Conv2DTranspose(padding='same'): out[s*i + a - p] += x[i] w[a]."""
    kh, kw, cin, cout = w.shape
    h, wd, _ = x.shape
    oh, ow = h * stride, wd * stride
    pt, pl = (kh - stride) // 2, (kw - stride) // 2
    out = np.zeros((oh + kh, ow + kw, cout), dtype)
    flat = x.reshape(-1, cin)
    for a in range(kh):
        for b in range(kw):
            out[a:a + oh:stride, b:b + ow:stride] += (flat @ w[a, b].astype(dtype)).reshape(h, wd, cout)
    return out[pt:pt + oh, pl:pl + ow]


def _rshift_round(acc: np.ndarray, k: int) -> np.ndarray:
    if k <= 0:
        return acc * (1 << -k)
    if acc.dtype == np.int64:
        return (acc + (1 << (k - 1))) >> k
    return np.floor((acc + float(1 << (k - 1))) / float(1 << k))


class IntHyperSynthesis:
    """The integer network; `run` is what encoder and decoder both call."""

    def __init__(self, layers: list[IntLayer]):
        self.layers = layers

    @property
    def out_channels(self) -> int:
        return self.layers[-1].weight.shape[-1]

    def run(self, z_hat: np.ndarray, backend: str = "blas") -> tuple[np.ndarray, np.ndarray]:
        """(h, w, Cz) ints -> (mu_q, log2_sigma_q), each (4h, 4w, M) int32 at Q8.

        backend: 'blas' (float64 BLAS, what the codec runs), 'int64' (numpy
        integers) or 'tf64' (TensorFlow float64 convolutions on the CPU, an
        independent implementation). All three must agree exactly.
        """
        z = np.clip(np.asarray(z_hat, np.int64), -Z_MAX, Z_MAX)
        if backend == "tf64":
            out = self._run_tf64(z).astype(np.int64).astype(np.int32)
        else:
            out = self._run_banded(z, {"blas": np.float64, "int64": np.int64}[backend])
        m = out.shape[-1] // 2
        mu_q = out[..., :m]
        log2_sigma_q = np.clip(out[..., m:], scale_table.LOG2_MIN_Q, scale_table.LOG2_MAX_Q)
        return mu_q, log2_sigma_q

    def _run_banded(self, z: np.ndarray, dtype, rows: int = BAND_ROWS, halo: int = BAND_HALO) -> np.ndarray:
        """Horizontal bands of z with a halo; each band's exact integers are cropped into place.

        Integer arithmetic makes banding free of seams by construction: the
        cropped rows see exactly the inputs they would see unbanded.
        """
        h = z.shape[0]
        up = self._upsampling()
        out = None
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            s0, s1 = max(0, r0 - halo), min(h, r1 + halo)
            band = self._run_numpy(z[s0:s1], dtype)
            part = band[(r0 - s0) * up:(r1 - s0) * up].astype(np.int64).astype(np.int32)
            if out is None:
                out = np.empty((h * up,) + part.shape[1:], np.int32)
            out[r0 * up:r1 * up] = part
        return out

    def _upsampling(self) -> int:
        f = 1
        for l in self.layers:
            f *= l.stride if l.kind == "deconv" else 1
        return f

    def _run_numpy(self, z: np.ndarray, dtype) -> np.ndarray:
        a = z.astype(dtype)
        for layer in self.layers:
            if layer.kind == "deconv":
                acc = _deconv_same(a, layer.weight, layer.stride, dtype)
            else:
                acc = _conv_same(a, layer.weight, dtype)
            acc = acc + layer.bias.astype(dtype)
            if layer.relu:
                acc = np.maximum(acc, 0)
            a = np.clip(_rshift_round(acc, layer.in_frac + layer.w_frac - layer.out_frac), -ACT_MAX, ACT_MAX)
        return a

    def _run_tf64(self, z: np.ndarray) -> np.ndarray:
        import tensorflow as tf
        with tf.device("/CPU:0"):
            a = tf.constant(z[None], tf.float64)
            for l in self.layers:
                w = tf.constant(l.weight, tf.float64)
                if l.kind == "deconv":
                    shape = [1, a.shape[1] * l.stride, a.shape[2] * l.stride, l.weight.shape[-1]]
                    acc = tf.nn.conv2d_transpose(a, tf.transpose(w, [0, 1, 3, 2]), shape, l.stride, "SAME")
                else:
                    acc = tf.nn.conv2d(a, w, 1, "SAME")
                acc = acc + tf.constant(l.bias, tf.float64)
                if l.relu:
                    acc = tf.maximum(acc, 0.0)
                k = l.in_frac + l.w_frac - l.out_frac
                acc = tf.floor((acc + 2.0 ** (k - 1)) / 2.0 ** k) if k > 0 else acc * 2.0 ** -k
                a = tf.clip_by_value(acc, -ACT_MAX, ACT_MAX)
            return a.numpy()[0]

    # -- storage ---------------------------------------------------------------
    def to_arrays(self, prefix: str = "hs") -> tuple[dict, dict[str, np.ndarray]]:
        meta, arrays = [], {}
        for i, l in enumerate(self.layers):
            meta.append({"kind": l.kind, "stride": l.stride, "w_frac": l.w_frac, "in_frac": l.in_frac,
                         "out_frac": l.out_frac, "relu": l.relu})
            arrays[f"{prefix}{i}_w"] = l.weight.astype(np.int16)
            arrays[f"{prefix}{i}_b"] = l.bias.astype(np.int64)
        return {"layers": meta}, arrays

    @classmethod
    def from_arrays(cls, meta: dict, arrays, prefix: str = "hs") -> IntHyperSynthesis:
        layers = []
        for i, m in enumerate(meta["layers"]):
            layers.append(IntLayer(weight=np.asarray(arrays[f"{prefix}{i}_w"], np.int64),
                                   bias=np.asarray(arrays[f"{prefix}{i}_b"], np.int64), **m))
        net = cls(layers)
        net.check_bounds()
        return net

    def check_bounds(self) -> None:
        """Refuse a network whose worst-case accumulator could exceed 2^53."""
        a_max = Z_MAX
        for i, l in enumerate(self.layers):
            taps = l.weight.shape[0] * l.weight.shape[1] * l.weight.shape[2]
            worst = taps * a_max * int(np.abs(l.weight).max(initial=0)) + int(np.abs(l.bias).max(initial=0))
            if worst >= ACC_LIMIT or np.abs(l.weight).max(initial=0) > W_MAX:
                raise ValueError(f"integer hyper-synthesis layer {i} could overflow exact float64")
            a_max = ACT_MAX


class FloatHyperSynthesis:
    """The integer hyper-synthesis (models.intnet) as float32 TF ops, for gradients only.

    Weights and biases are the integers scaled back by their powers of two, so this is the
    network the integers approximate; mu and log2 sigma come out within about 0.02 (tested: 0.05) of the
    integer path's (tests/test_refine.py). The decoder never uses it: whatever the encoder's refinement
    chooses is rounded and run through the integer network before it is coded.
    """

    def __init__(self, tf, net: IntHyperSynthesis):
        self.tf = tf
        self.layers = [(l, tf.constant(l.weight.astype(np.float64) * 2.0 ** -l.w_frac, tf.float32),
                        tf.constant(l.bias.astype(np.float64) * 2.0 ** -(l.in_frac + l.w_frac), tf.float32))
                       for l in net.layers]

    def __call__(self, z):
        """z (1, h, w, Cz) -> (mu, log2 sigma), each (1, 4h, 4w, M)."""
        tf = self.tf
        a = z
        for l, w, b in self.layers:
            if l.kind == "deconv":
                shape = [1, tf.shape(a)[1] * l.stride, tf.shape(a)[2] * l.stride, l.weight.shape[-1]]
                a = tf.nn.conv2d_transpose(a, tf.transpose(w, [0, 1, 3, 2]), shape, l.stride, "SAME") + b
            else:
                a = tf.nn.conv2d(a, w, 1, "SAME") + b
            if l.relu:
                a = tf.maximum(a, 0.0)
        m = a.shape[-1] // 2
        return a[..., :m], tf.clip_by_value(a[..., m:], scale_table.LOG2_SCALE_MIN, scale_table.LOG2_SCALE_MAX)


def from_float(layers: list[tuple[str, np.ndarray, np.ndarray, bool]]) -> IntHyperSynthesis:
    """Quantise a trained float hyper-synthesis given as (kind, kernel as Keras stores it, bias, relu) per layer.

    kind is 'conv' (stride 1, kernel (kh, kw, in, out)) or 'deconv' (stride 2, Keras's
    transposed layout (kh, kw, out, in)). One quantiser for every source of weights
    (Keras layers, JAX parameters), so both give the same integers.
    """
    out: list[IntLayer] = []
    in_frac = 0
    for i, (kind, kernel, bias, relu) in enumerate(layers):
        w, b = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
        if kind == "deconv":
            w = w.transpose(0, 1, 3, 2)
        last = i == len(layers) - 1
        out_frac = scale_table.Q if last else ACT_FRAC
        w_frac = int(np.floor(np.log2(W_MAX / max(np.abs(w).max(), 1e-12))))
        w_frac = min(w_frac, 24)
        wq = np.round(w * 2.0 ** w_frac).astype(np.int64)
        bq = np.round(b * 2.0 ** (in_frac + w_frac)).astype(np.int64)
        out.append(IntLayer(kind, 2 if kind == "deconv" else 1, wq, bq, w_frac, in_frac, out_frac, bool(relu)))
        in_frac = out_frac
    net = IntHyperSynthesis(out)
    net.check_bounds()
    return net


def from_keras(hyper_synthesis) -> IntHyperSynthesis:
    """Quantise a float HyperSynthesisTransform (models/transforms.py)."""
    import tensorflow as tf
    layers = []
    for kl in hyper_synthesis.layers:
        deconv = isinstance(kl, tf.keras.layers.Conv2DTranspose)
        if kl.strides[0] != (2 if deconv else 1):
            raise ValueError(f"{kl.name}: stride {kl.strides[0]} is not supported")
        layers.append(("deconv" if deconv else "conv", kl.kernel.numpy(), kl.bias.numpy(),
                       kl.activation is tf.keras.activations.relu))
    return from_float(layers)


def meta_json(net: IntHyperSynthesis) -> str:
    return json.dumps(net.to_arrays()[0])
