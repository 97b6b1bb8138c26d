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


@pytest.fixture(scope="module")
def tile_stream(encoder, tmp_path_factory) -> Path:
    """An image exactly one synthesis tile with its halo: its untiled decode is one tile's working set."""
    side = (D.TILE_LATENTS + 2 * D.HALO_LATENTS) * Y_STRIDE
    path = tmp_path_factory.mktemp("perf") / "tile.rlk"
    path.write_bytes(encoder.encode_fixed(smooth_image(side, side), 0, 128))
    return path


def _decode_in_fresh_process(stream: Path, registry: Path, out_npy: Path, untiled: bool) -> dict:
    """One decode in its own process (evaluation.bench.worker), so ru_maxrss is this decode's alone."""
    spec_path, res_path = out_npy.with_suffix(".spec.json"), out_npy.with_suffix(".res.json")
    spec_path.write_text(json.dumps({"op": "decode", "stream": str(stream), "registry": str(registry), "runs": 1,
                                     "untiled": untiled, "out_npy": str(out_npy)}))
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-m", "evaluation.bench.worker", str(spec_path), str(res_path)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert res_path.is_file(), r.stderr[-2000:]
    res = json.loads(res_path.read_text())
    assert "error" not in res, res.get("traceback", res)
    return res


@pytest.mark.slow
def test_large_decode_memory_is_bounded_by_tiling(large_stream, tile_stream, tiny_registry, tmp_path):
    """Decode 4096x2304 in a fresh process: the synthesis adds the float image plus one tile's working set,
    not whole-image activations; with tiling disabled the same bound is exceeded.

    One tile's working set is measured, not modelled: it depends on TensorFlow's convolution backend
    (Eigen's transposed convolution keeps a column buffer ~25x the input; oneDNN does not), and which
    backend runs depends on the CPU (oneDNN is TF's default only where AVX512-VNNI or similar exist).
    Measured here: tiled 338 / untiled 950 MiB with Eigen, 237 / 464 MiB with oneDNN."""
    tiled = _decode_in_fresh_process(large_stream, tiny_registry, tmp_path / "tiled.npy", untiled=False)
    whole = _decode_in_fresh_process(large_stream, tiny_registry, tmp_path / "untiled.npy", untiled=True)
    one_tile = _decode_in_fresh_process(tile_stream, tiny_registry, tmp_path / "tile.npy", untiled=True)

    px = W * H

    def synth_increase(res: dict) -> float:
        return (res["peak_rss_after_mb"]["synthesis"] - res["rss_before_mb"]["synthesis"]) * MIB

    tile_bytes = synth_increase(one_tile)                  # one tile's output and activations, this backend's
    synth_bound = 12 * px + tile_bytes + 64 * MIB          # float32 output image + one tile + slack

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
    from evaluation.bench import run as bench
    rc = bench.main(["--inprocess", "--sizes", "96x64", "--runs", "1", "--registry", str(tiny_registry),
                     "--out", str(tmp_path), "--refine", "5"])
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    ok = {(r["codec"], r["op"]) for r in rows if not r["error"]}
    assert {("ours", "encode_search"), ("ours", "encode_fixed"), ("ours", "decode"), ("ours", "startup_decoder"),
            ("ours", "startup_encoder"), ("ours", "encode_refine")} <= ok
    dec = next(r for r in rows if r["op"] == "decode")
    assert float(dec["median_s"]) > 0 and float(dec["stage_synthesis_s"]) > 0 and float(dec["stage_parse_s"]) > 0
    text = (tmp_path / "table.txt").read_text()
    for heading in ("ENCODE,", "REFINED ENCODE", "DECODE,", "PEAK RSS", "DECODE SPLIT", "START-UP", "GOALS"):
        assert heading in text
    # In-process runs never claim isolation-dependent goals.
    assert "[not measured] 3840x2160" in text
    # Encoder and decoder are timed through their own stages hooks (models/stages.py), never patched.
    enc = next(r for r in rows if r["op"] == "encode_fixed")
    assert float(enc["stage_analysis_s"]) > 0 and float(enc["stage_code_s"]) > 0
    from encoder import encode as E
    from models import coding, intnet
    assert not hasattr(D.synthesize, "__wrapped__") and not hasattr(D.parse, "__wrapped__")
    for fn in (intnet.IntHyperSynthesis.run, E.EncoderModel.analyse, E.Analysed.code, coding.encode):
        assert not hasattr(fn, "__wrapped__"), fn


def test_decoder_kmac_per_pixel_of_the_shipped_architecture_and_of_slice_nets():
    """The bench's complexity figure: g_s and the integer h_s of the shipped N=128, M=192 models counted by hand,
    and a v3 model's slice nets as training.charm.kmac_per_pixel counts them from the parameter layout."""
    pytest.importorskip("jax")
    from evaluation.bench.ops import decoder_kmac_per_pixel
    from models.weights import load_decoder_model, load_registry, load_slice_nets
    from training.charm import kmac_per_pixel
    shipped = load_decoder_model(load_registry().entries[0])
    k = decoder_kmac_per_pixel(shipped)
    # g_s: 5x5 stride-2 transposed convs (k*k/4 taps per output) at 1/8, 1/4, 1/2, 1 of the side, IGDN C*C
    g_s = (25 * 192 * 128 / 4 / 64 + 25 * 128 * 128 / 4 / 16 + 25 * 128 * 128 / 4 / 4 + 25 * 128 * 3 / 4
           + 128 * 128 * (1 / 64 + 1 / 16 + 1 / 4))
    h_s = 25 * 128 * 128 / 4 / 32 ** 2 + 25 * 128 * 192 / 4 / 16 ** 2 + 9 * 192 * 384 / 16 ** 2
    assert k["synthesis"] == pytest.approx(g_s / 1e3) and round(k["synthesis"], 1) == 42.2
    assert k["hyper_synthesis_int"] == pytest.approx(h_s / 1e3) and round(k["hyper_synthesis_int"], 1) == 3.3
    assert k["slice_nets"] == 0 and k["total"] == pytest.approx(k["synthesis"] + k["hyper_synthesis_int"])

    golden = Path(__file__).resolve().parent / "expected" / "charm"
    entry = load_registry(golden / "registry.yaml").entries[0]
    slices = load_slice_nets(entry.dec_path)
    k3 = decoder_kmac_per_pixel(load_decoder_model(entry), slices)
    hidden = int(slices.cc[0].layers[0].weight.shape[-1])
    assert k3["slice_nets"] > 0
    assert k3["slice_nets"] == pytest.approx(kmac_per_pixel(slices.latent_channels, slices.num_slices, hidden,
                                                            slices.lrp is not None, slices.max_support))
    assert k3["total"] == pytest.approx(k3["synthesis"] + k3["hyper_synthesis_int"] + k3["slice_nets"])


@pytest.mark.slow
def test_bench_compares_bitstream_v3_with_v2(tiny_registry, tmp_path):
    """`--v3` with a prebuilt tiny v2/v3 pair (--v3-dir): Kodak decodes of both, interleaved; ratio, split, kMAC."""
    pytest.importorskip("jax")
    from evaluation.bench import run as bench
    from evaluation.datasets import KODAK
    from tests.test_charm_codec import build_registry
    if not (KODAK / "kodim01.png").is_file():
        pytest.skip("no Kodak")
    pair = tmp_path / "pair"
    pair.mkdir()
    build_registry(pair)                             # tiny v3 for 0.25, its v2 base for 0.5
    rc = bench.main(["--inprocess", "--sizes", "96x64", "--runs", "2", "--skip-anchors", "--registry",
                     str(tiny_registry), "--v3", "--v3-dir", str(pair), "--v3-images", "2", "--out",
                     str(tmp_path / "out")])
    assert rc == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())["v3"]
    dec = res["decode"]
    assert [r["image"] for r in dec["images"]] == ["kodim01.png", "kodim02.png"]
    for r in dec["images"]:
        assert len(r["v2"]["wall_s"]) == len(r["v3"]["cpu_s"]) == 2
    lab = dec["labels"]
    assert (lab["v2"]["version"], lab["v3"]["version"]) == (2, 3)
    assert "parse.slice_loop" in lab["v3"]["stages"] and "parse.range_decode_y" in lab["v2"]["stages"]
    assert lab["v2"]["kmac_per_pixel"]["slice_nets"] == 0 < lab["v3"]["kmac_per_pixel"]["slice_nets"]
    text = (tmp_path / "out" / "table.txt").read_text()
    for heading in ("BITSTREAM V3 vs V2, DECODE on Kodak", "BITSTREAM V3 vs V2, DECODE SPLIT", "DECODER COMPLEXITY"):
        assert heading in text
    assert "bitstream v3 decode <= 1.5x v2 on CPU (Kodak)" in text
    rows = list(csv.DictReader((tmp_path / "out" / "bench.csv").open()))
    assert {r["codec"] for r in rows if r["op"] == "decode_kodak"} == {"ours_v2", "ours_v3"}
