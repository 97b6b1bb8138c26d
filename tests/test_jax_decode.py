"""The decoder's JAX backend (the GPU parity path) against the TF decoder, on CPU, on every golden stream.

Same parse, same integer path; only the float synthesis differs (JAX here, TF there). On the
same CPU both are float32 convolutions in different summation orders, so decoded pixels may
differ by rounding: at most 1 grey level, the bar the GPU parity check holds too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

from tests.conftest import ROOT  # noqa: E402

STREAMS = sorted((ROOT / "conformance" / "streams").glob("*.bit"))


@pytest.fixture(scope="module")
def models():
    from decoder.decode import ModelCache
    return ModelCache()


@pytest.mark.parametrize("stream", STREAMS, ids=[p.stem for p in STREAMS])
def test_jax_synthesis_matches_tf_within_one_level(stream: Path, models):
    from decoder import decode as D
    from decoder.jax_synthesis import JaxSynthesis
    parsed = D.parse(stream.read_bytes(), models)
    model = models.get(parsed.header)
    y = D.dequantize(parsed)
    w, h = parsed.header.width, parsed.header.height
    ref = D.to_uint8(D.synthesize(model.synthesis, y), w, h)
    jx = JaxSynthesis([v.numpy() for v in model.synthesis.variables], model.widths["num_filters"],
                      model.widths["latent_channels"])
    got = D.to_uint8(jx(y[None])[0], w, h)
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1, (stream.name, int(diff.max()))
    assert (diff > 0).mean() < 0.01          # rounding, not a different transform


def test_full_precision_is_set():
    """TF32 and other reduced-precision matmul modes are off in the JAX path."""
    import os

    from decoder.jax_synthesis import configure, settings
    configure()
    s = settings()
    assert s["matmul_precision"] == "highest" and os.environ["NVIDIA_TF32_OVERRIDE"] == "0"


@pytest.mark.slow
def test_decoder_cli_backend_jax(tmp_path):
    """`python -m decoder --backend jax` writes the TF decode's PNG within one level."""
    from PIL import Image

    from tests.conftest import run_cli
    s = STREAMS[0]
    for backend in ("tf", "jax"):
        r = run_cli(["-m", "decoder", str(s), str(tmp_path / f"{backend}.png"), "--backend", backend])
        assert r.returncode == 0, r.stderr
    a, b = (np.asarray(Image.open(tmp_path / f"{k}.png"), int) for k in ("tf", "jax"))
    assert a.shape == b.shape and np.abs(a - b).max() <= 1
