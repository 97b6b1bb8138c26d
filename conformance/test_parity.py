"""Parity check: never claims GPU parity it did not measure; the perturbation test can tell exact from inexact."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conformance import decoding as Dc
from conformance.checks import parity as P
from conformance.conftest import check_of
from conformance.report import CheckResult


@pytest.fixture(scope="module")
def lo_model(tiny_registry):
    from decoder import decode as D
    models = D.ModelCache(str(tiny_registry))
    e = models.registry.entries[0]
    return models.get(D.Header(e.target_index, e.hash16, 1, 1, 128))


def _z(net, seed: int = 0, scale: float = 40.0) -> np.ndarray:
    c = net.layers[0].weight.shape[2]
    return np.round(np.random.default_rng(seed).normal(0, scale, (8, 12, c))).astype(np.int32)


def test_exact_variants_agree(lo_model):
    res = P.compare_hyper(lo_model.intnet, _z(lo_model.intnet), 128, P.exact_variants())
    assert set(res) == {"int64", "tf-float64", "blas-permuted-order"}
    assert all(v["moved"] == 0 and v["indices_moved"] == 0 for v in res.values()), res


def test_inexact_path_is_detected(lo_model):
    """The check can fail: a hyper path with float noise in its accumulators moves integer outputs."""
    def noisy(net, z):
        mu, ls = net.run(z, "blas")
        return mu + 1, ls
    res = P.compare_hyper(lo_model.intnet, _z(lo_model.intnet), 128, {"noisy": noisy})
    assert res["noisy"]["moved"] > 0
    # and through the check itself: a broken variant fails it and names the stream
    ctx, streams = _fake_ctx(lo_model)
    r = CheckResult("parity", True, "")
    P._hyper_part(ctx, r, streams, {"noisy": noisy})
    assert not r.passed and "noisy" in r.failures[0].what and r.failures[0].image == "crop.png"


def _fake_ctx(lo_model):
    import tempfile
    from pathlib import Path

    from conformance.conftest import kodak_crop
    from encoder.api import Encoder
    reg = str(lo_model.entry.prefix.parent / "registry.yaml")
    enc = Encoder(reg)
    d = Path(tempfile.mkdtemp())
    p = d / "crop_025.bit"
    p.write_bytes(enc.encode_fixed(kodak_crop(h=64, w=64), 0, 128))
    stream = SimpleNamespace(path=p, image="crop.png", target=0.25)
    return SimpleNamespace(opts=SimpleNamespace(registry=reg, seed=0), work=d), [stream]


def test_float32_hyper_path_is_not_exact(lo_model):
    """Sensitivity: the same network accumulated in float32 moves outputs on large inputs; the exact paths do not."""
    net = lo_model.intnet
    z = _z(net, scale=float(P.STRESS_SCALE))
    res = P.compare_hyper(net, z, 128, {"f32": P.float32_run, **P.exact_variants()})
    assert res["f32"]["moved"] > 0
    assert all(res[k]["moved"] == 0 for k in P.exact_variants())


def test_no_gpu_is_reported_exactly(suite_runs):
    p = check_of(suite_runs["rep1"], "parity")
    assert p["passed"], p["failures"]
    if not P.visible_gpus():
        assert p["figures"]["gpu"] == P.GPU_MSG == "GPU: not available, parity proven on CPU configurations only"
        assert p["summary"].startswith(P.GPU_MSG)
    assert p["figures"]["hyper_cases"] > 0 and p["figures"]["float32_path_moved_outputs_on_stress_z"] > 0
    titles = [t["title"] for t in p["tables"]]
    assert any("perturbation" in t for t in titles) and any("synthesis weights" in t for t in titles)
    # the bitstream v3 goldens are in, with their version: slice loop per stream + a stress input, synthesis too
    assert p["figures"]["v3_streams"] == 3 and p["figures"]["slice_loop_cases"] == 4
    slices = next(t for t in p["tables"] if t["title"].startswith("Integer slice loop"))
    assert all(row[2] == "v3" and all(c.startswith("0/") for c in row[6:]) for row in slices["rows"])
    synth = next(t for t in p["tables"] if "synthesis weights" in t["title"])
    assert {row[2] for row in synth["rows"]} == {"v2", "v3"}


def _one_stream_against(other: Dc.DecodeRun, monkeypatch, tmp_path) -> tuple:
    """(ctx, streams) for one stream whose CPU reference decode gives symbols 'h'; `other` is the device run."""
    cpu = Dc.DecodeRun("t1-onednn0", 0, 1.0, {"a.bit": {"symbols": "h", "rgb": np.zeros((2, 2, 3), np.uint8)}})
    monkeypatch.setattr(P, "decode_runs", lambda ctx, streams: {Dc.CONFIGS[0].name: cpu})
    monkeypatch.setattr(P, "run_decoder_batch", lambda *a, **k: other)
    monkeypatch.setattr(P, "decode_groups", lambda ctx, streams: [])
    ctx = SimpleNamespace(work=tmp_path, opts=SimpleNamespace(registry=None, quick=False, configs=None))
    return ctx, [SimpleNamespace(path=tmp_path / "a.bit", image="a.png", target=0.25)]


def test_gpu_parity_is_not_claimed_unless_measured(monkeypatch, tmp_path):
    """A visible GPU whose decode process shows no GPU memory use must fail, not pass."""
    gpu = Dc.DecodeRun("gpu", 0, 1.0, {"a.bit": {"symbols": "h", "rgb": np.zeros((2, 2, 3), np.uint8)}},
                       meta={"gpu_report": {"peak_bytes": 0, "tf32": False, "device_name": "fake"}})
    ctx, streams = _one_stream_against(gpu, monkeypatch, tmp_path)
    r = CheckResult("parity", True, "")
    P._gpu_part(ctx, r, streams, ["/physical_device:GPU:0"])
    assert not r.passed and "NOT measured" in r.failures[0].what
    # measured, but the GPU parse differs: fails and names the stream
    gpu.meta["gpu_report"]["peak_bytes"] = 1 << 20
    gpu.results["a.bit"]["symbols"] = "other"
    r = CheckResult("parity", True, "")
    P._gpu_part(ctx, r, streams, ["/physical_device:GPU:0"])
    assert not r.passed and "symbols" in r.failures[0].what and r.failures[0].image == "a.png"
    # measured and identical: passes, with the figures reported
    gpu.results["a.bit"]["symbols"] = "h"
    r = CheckResult("parity", True, "")
    P._gpu_part(ctx, r, streams, ["/physical_device:GPU:0"])
    assert r.passed and r.figures["gpu_max_recon_diff"] == 0 and r.figures["gpu_peak_bytes"] == 1 << 20


@pytest.mark.slow
def test_jax_backend_parity_on_cpu(lo_model):
    """The --gpu-backend jax path, on the CPU: real decoder processes (TF, and JAX via conformance.children.jax_decode),
    symbols identical and reconstructions within one level; the report names the device JAX used."""
    pytest.importorskip("jax")
    from conformance.common import V3_GOLDEN_DIR
    from conformance.suite import load_v3_goldens
    ctx, streams = _fake_ctx(lo_model)
    streams += load_v3_goldens(V3_GOLDEN_DIR)            # and the bitstream v3 goldens, with their registry
    ctx.cache = {}
    ctx.opts.quick, ctx.opts.configs, ctx.opts.gpu_backend = True, None, "jax"
    ctx.bar = lambda n, desc: SimpleNamespace(set_postfix_str=lambda s: None, update=lambda k: None,
                                              close=lambda: None)
    r = CheckResult("parity", True, "")
    P._jax_part(ctx, r, streams)
    assert r.passed, [f.what for f in r.failures]
    f = r.figures
    assert f["jax_platform"] == "cpu" and f["jax_matmul_precision"] == "highest"
    assert f["jax_streams"] == f["jax_symbols_identical"] == 4 and f["jax_max_recon_diff"] <= 1
    assert f["jax_v3_streams"] == 3
    (t,) = r.tables
    assert [row[2] for row in t.rows] == ["v2", "v3", "v3", "v3"] and all(row[4] == "yes" for row in t.rows)
    assert "gpu_backend" not in f            # a CPU run never claims GPU parity


def test_jax_parity_fails_on_a_different_parse(monkeypatch, tmp_path):
    jx = Dc.DecodeRun("jax", 0, 1.0, {"a.bit": {"symbols": "other", "rgb": np.zeros((2, 2, 3), np.uint8)}},
                      meta={"jax_report": {"platform": "cpu", "device": "cpu", "matmul_precision": "highest"}})
    ctx, streams = _one_stream_against(jx, monkeypatch, tmp_path)
    r = CheckResult("parity", True, "")
    P._jax_part(ctx, r, streams)
    assert not r.passed and "parse differs" in r.failures[0].what
    jx.results["a.bit"]["symbols"] = "h"
    jx.meta["jax_report"]["matmul_precision"] = "tensorfloat32"
    r = CheckResult("parity", True, "")
    P._jax_part(ctx, r, streams)
    assert not r.passed and "TF32" in r.failures[0].what
