"""Memory and start-up properties, with tiny models. No timing assertions: the speed goals live in
`python -m evaluation.bench` (see evaluation/BENCH.md).

Tiling equality itself is covered by tests/test_codec.py (test_tiled_synthesis_is_seamless,
test_tiled_analysis_matches_untiled); here the large decode additionally checks that the default
tile/halo give the untiled output end to end.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from decoder import decode as D
from models.transforms import Y_STRIDE
from tests.conftest import ROOT

MIB = 1 << 20
W, H = 4096, 2304          # 9.4 MP, 6 x 4 synthesis tiles


def smooth_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(xx / 300) * np.cos(yy / 200),
                    128 + 80 * np.cos(xx / 170 + yy / 410),
                    128 + 60 * np.sin((xx + yy) / 500)], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def large_stream(encoder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("perf") / "large.rlk"
    path.write_bytes(encoder.encode_fixed(smooth_image(H, W), 0, 128))     # model 'lo': N = 8, M = 8
    return path


def _decode_in_fresh_process(stream: Path, registry: Path, out_npy: Path, untiled: bool) -> dict:
    """One decode in its own process (evaluation.bench_worker), so ru_maxrss is this decode's alone."""
    spec_path, res_path = out_npy.with_suffix(".spec.json"), out_npy.with_suffix(".res.json")
    spec_path.write_text(json.dumps({"op": "decode", "stream": str(stream), "registry": str(registry), "runs": 1,
                                     "untiled": untiled, "out_npy": str(out_npy)}))
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-m", "evaluation.bench_worker", str(spec_path), str(res_path)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert res_path.is_file(), r.stderr[-2000:]
    res = json.loads(res_path.read_text())
    assert "error" not in res, res.get("traceback", res)
    return res


@pytest.mark.slow
def test_large_decode_memory_is_bounded_by_tiling(large_stream, tiny_registry, tmp_path):
    """Decode 4096x2304 in a fresh process: the synthesis adds the float image plus one tile's working set,
    not whole-image activations; with tiling disabled the same bound is exceeded."""
    tiled = _decode_in_fresh_process(large_stream, tiny_registry, tmp_path / "tiled.npy", untiled=False)
    whole = _decode_in_fresh_process(large_stream, tiny_registry, tmp_path / "untiled.npy", untiled=True)

    n = 8                                                   # num_filters of the tiny 'lo' model
    px = W * H
    side = (D.TILE_LATENTS + 2 * D.HALO_LATENTS) * Y_STRIDE  # one synthesis tile with its halo, in pixels
    tile_bytes = 4 * (side // 2) ** 2 * n * 4 + 4 * side ** 2 * 3 * 4   # 4 half-res activations + 4 RGB tiles
    synth_bound = 12 * px + tile_bytes + 64 * MIB          # float32 output image + one tile + slack

    def synth_increase(res: dict) -> float:
        return (res["peak_rss_after_mb"]["synthesis"] - res["rss_before_mb"]["synthesis"]) * MIB

    assert synth_increase(tiled) < synth_bound, (synth_increase(tiled) / MIB, synth_bound / MIB)
    assert synth_increase(whole) > synth_bound, (synth_increase(whole) / MIB, synth_bound / MIB)
    # The whole decode: whole-image buffers (float image, uint8 conversion temporaries, latents) + one tile.
    decode_increase = (tiled["peak_rss_mb"] - tiled["rss_ready_mb"]) * MIB
    assert decode_increase < 64 * px + tile_bytes, decode_increase / MIB
    assert tiled["peak_rss_mb"] < 1536, tiled["peak_rss_mb"]   # TensorFlow itself is ~0.5 GB of this
    # Default tile and halo join without seams, end to end.
    a, b = np.load(tmp_path / "tiled.npy"), np.load(tmp_path / "untiled.npy")
    assert a.shape == (H, W, 3) and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    # A decoder process imports no encoder, rate-control or training code.
    assert tiled["encoder_side_modules"] == []


def test_decoder_loads_only_the_model_a_stream_needs(encoder, tiny_registry, monkeypatch):
    import models.weights as W_
    rgb = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    data = encoder.encode_fixed(rgb, 1, 128)             # the 'hi' model, second of two in the registry
    loaded: list[str] = []
    orig = W_.load_decoder_model
    monkeypatch.setattr(W_, "load_decoder_model", lambda entry: loaded.append(entry.name) or orig(entry))
    models = D.ModelCache(str(tiny_registry))
    assert loaded == []                                  # building the cache reads the registry only
    D.decode_bytes(data, models)
    D.decode_bytes(data, models)
    assert loaded == ["hi"]


@pytest.mark.slow
def test_bench_runs_and_reports(tiny_registry, tmp_path):
    """The benchmark CLI end to end, in-process on a tiny image (anchors included where available)."""
    from evaluation import bench
    rc = bench.main(["--inprocess", "--sizes", "96x64", "--runs", "1", "--registry", str(tiny_registry),
                     "--out", str(tmp_path)])
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    ok = {(r["codec"], r["op"]) for r in rows if not r["error"]}
    assert {("ours", "encode_search"), ("ours", "encode_fixed"), ("ours", "decode"), ("ours", "startup_decoder"),
            ("ours", "startup_encoder")} <= ok
    dec = next(r for r in rows if r["op"] == "decode")
    assert float(dec["median_s"]) > 0 and float(dec["stage_synthesis_s"]) > 0 and float(dec["stage_parse_s"]) > 0
    text = (tmp_path / "table.txt").read_text()
    for heading in ("ENCODE,", "DECODE,", "PEAK RSS", "DECODE SPLIT", "START-UP", "GOALS"):
        assert heading in text
    # In-process runs never claim isolation-dependent goals.
    assert "[not measured] 3840x2160" in text
    # Timing wrappers are removed again: the codec modules are untouched.
    assert not hasattr(D.synthesize, "__wrapped__") and not hasattr(D.parse, "__wrapped__")
