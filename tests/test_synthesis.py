"""The decoder's Keras-free synthesis (models/synthesis.py) and its lean start-up.

Speed is not asserted here (evaluation.bench prints it); these pin what makes it fast without changing
a decoded byte: the plain-TF synthesis equals the Keras SynthesisTransform bit for bit, and a decoder
process imports neither Keras-built models, tensorflow_compression's Python package nor JAX.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from models.synthesis import Synthesis, weight_shapes
from models.transforms import SynthesisTransform
from tests.conftest import run_cli


def _keras(n: int, m: int, seed: int) -> SynthesisTransform:
    """A Keras synthesis with random weights, GDN parameters spread around their bounds (both sides)."""
    k = SynthesisTransform(n)
    k.build((None, None, None, m))
    rng = np.random.default_rng(seed)
    ws = []
    for w in k.get_weights():
        if w.ndim == 1 and w.shape[0] == n and len(ws) % 4 == 2:            # reparametrised GDN beta
            ws.append(np.abs(rng.normal(1.0, 0.3, w.shape)).astype(np.float32) * rng.choice([1, 1e-4], w.shape))
        elif w.ndim == 2:                                                  # reparametrised GDN gamma
            ws.append((rng.normal(0, 0.2, w.shape) + 0.3 * np.eye(n)).astype(np.float32))
        else:
            ws.append(rng.normal(0, 0.15, w.shape).astype(np.float32))
    k.set_weights(ws)
    return k


@pytest.mark.parametrize("n,m", [(8, 8), (16, 24)])
def test_plain_synthesis_equals_keras_bit_for_bit(n, m):
    keras = _keras(n, m, seed=n + m)
    assert [w.shape for w in keras.get_weights()] == weight_shapes(n, m)
    plain = Synthesis(keras.get_weights(), n, m)
    sig = [tf.TensorSpec([1, None, None, None], tf.float32)]
    fk = tf.function(lambda y: keras(y), input_signature=sig)
    fp = tf.function(lambda y: plain(y), input_signature=sig, autograph=False)
    rng = np.random.default_rng(7)
    for h, w in [(1, 1), (2, 3), (5, 9), (12, 7)]:
        y = (rng.standard_normal((1, h, w, m)) * 4).astype(np.float32)
        ref = fk(y).numpy()
        assert ref.shape == (1, 16 * h, 16 * w, 3)
        assert np.array_equal(fp(y).numpy(), ref)                 # graph, as models.synthesis.synthesize runs it
        assert np.array_equal(plain(tf.constant(y)).numpy(), keras(y).numpy())   # eager


def test_bfloat16_convolutions_stay_close_and_keep_float32_out():
    """The refinement's fast path: deconvs in bf16, float32 between steps; close to float32, not equal."""
    n, m = 16, 24
    plain = Synthesis(_keras(n, m, seed=5).get_weights(), n, m)
    y = tf.constant((np.random.default_rng(2).standard_normal((1, 4, 5, m)) * 4).astype(np.float32))
    ref, fast = plain(y).numpy(), plain(y, tf.bfloat16)
    assert fast.dtype == tf.float32 and fast.shape == ref.shape
    err = np.abs(fast.numpy() - ref)
    assert 0 < err.max() < 0.05 * max(np.abs(ref).max(), 1.0)


def test_steps_compose_to_the_whole_and_weights_round_trip():
    n, m = 8, 12
    keras = _keras(n, m, seed=3)
    plain = Synthesis(keras.get_weights(), n, m)
    assert [s[0] for s in plain.steps()] == [layer.name for layer in keras.layers]
    y = tf.constant(np.random.default_rng(1).standard_normal((1, 3, 4, m)).astype(np.float32))
    x = y
    for _, _, _, fn in plain.steps():
        x = fn(x)
    assert np.array_equal(x.numpy(), plain(y).numpy())
    for a, b in zip(plain.get_weights(), keras.get_weights()):
        assert np.array_equal(a, b)
    # set_weights reaches an already traced graph (conformance's parity check perturbs weights this way)
    fn = tf.function(lambda v: plain(v), autograph=False)
    before = fn(y).numpy()
    plain.set_weights([w * 1.01 for w in plain.get_weights()])
    assert not np.array_equal(fn(y).numpy(), before)
    with pytest.raises(ValueError, match="shapes"):
        plain.set_weights(plain.get_weights()[:-1])
    with pytest.raises(ValueError, match="shapes"):
        Synthesis(keras.get_weights(), n, m + 1)


LEAN_PROBE = r"""
import json, sys
from decoder.__main__ import main
rc = main(sys.argv[1:])
mods = sorted(m for m in sys.modules if m.split(".")[0] in
              ("tensorflow_compression", "tensorflow_probability", "jax", "encoder", "rate_control", "training")
              or m in ("models.transforms", "models.jax_transforms"))
# The range coder ops came from tfc's op library; importing the package afterwards must still give them.
import numpy as np, tensorflow_compression as tfc
from models import coding
t = coding.CdfTable(np.array([16, 0, 30000, 65536, 16, 0, 20000, 50000, 65536], np.int32),
                    np.array([0, -1], np.int32), np.array([2, 3], np.int32))
sym, idx = np.array([0, 5, -1, 1, -70], np.int32), np.array([0, 0, 1, 1, 1], np.int32)
ok = bool(np.array_equal(coding.decode(coding.encode(sym, idx, t), idx, t), sym)) and hasattr(tfc, "create_range_decoder")
print(json.dumps({"rc": rc, "modules": mods, "tfc_after": ok}))
"""


@pytest.mark.slow
def test_decoder_process_is_lean(encoder, tiny_registry, tmp_path):
    """A whole CLI decode imports no Keras model code, no tfc/TFP package and no JAX (TensorFlow would
    import JAX on the side when installed); tfc imported afterwards still codes with the same ops."""
    rgb = np.random.default_rng(5).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    stream = tmp_path / "a.bit"
    stream.write_bytes(encoder.encode_fixed(rgb, 0, 128))
    r = run_cli(["-c", LEAN_PROBE, str(stream), str(tmp_path / "a.png"), "--registry", str(tiny_registry)])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res == {"rc": 0, "modules": [], "tfc_after": True}
    from PIL import Image

    from decoder.api import decode_bytes
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), decode_bytes(stream.read_bytes(),
                                                                                   str(tiny_registry)))
