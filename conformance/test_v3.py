"""Bitstream v3 in the determinism and parity checks: the committed v3 goldens are always checked, per stream with
their version, and a v3 integer mismatch (y_hat_q, scale indexes) fails the checks even when symbols and pixels agree.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from conformance import decoding as Dc
from conformance.checks import determinism as Dt
from conformance.checks import parity as P
from conformance.common import PARSE_INTS, V3_GOLDEN_DIR, parse_ints
from conformance.report import CheckResult
from conformance.suite import CHECKS, Context, Options, load_v3_goldens

V3_REGISTRY = V3_GOLDEN_DIR / "registry.yaml"


def _ctx(tmp_path: Path, **opts) -> Context:
    """A suite context with nothing encoded: only the v3 goldens to check (as with --quick on no images)."""
    o = Options(tmp_path, [0.25], tmp_path / "report", progress=False, **opts)
    work = tmp_path / "work"
    work.mkdir()
    return Context(o, None, [], work)


def _cache():
    from decoder import decode as D
    return D.ModelCache(str(V3_REGISTRY))


def test_default_run_includes_the_v3_goldens(tmp_path):
    """No flag needed: the suite's default options name the committed v3 goldens, determinism and parity take all of
    them (with --quick too), each with its own registry and version 3; a missing folder fails, never skips."""
    assert Options(tmp_path, [0.25], tmp_path).v3_dir == V3_GOLDEN_DIR
    assert {"determinism", "parity"} <= set(CHECKS)
    v3 = load_v3_goldens(V3_GOLDEN_DIR)
    assert len(v3) == 3 and all(s.version == 3 and s.registry == str(V3_REGISTRY) for s in v3)
    assert all(set(s.expected) == {"symbols", "y_hat_q"} for s in v3)
    r = CheckResult("determinism", True, "")
    got = Dc.streams_for(_ctx(tmp_path, quick=True), r)
    assert r.passed and [s.path.name for s in got] == [s.path.name for s in v3]
    assert Dc.describe_versions(got) == "3 v3"
    r = CheckResult("parity", True, "")
    (tmp_path / "m").mkdir()
    assert Dc.streams_for(_ctx(tmp_path / "m", v3_dir=tmp_path / "missing"), r) == []
    assert not r.passed and "bitstream v3 NOT checked" in r.failures[0].what


def test_worker_reports_v3_parse_integers(tmp_path):
    """The decoder's --info lines carry y_hat_q for v3 (absent for v2) and the pinned golden hashes match."""
    v3 = load_v3_goldens(V3_GOLDEN_DIR)
    p = Dc.decode_parsed(v3[0].path.read_bytes(), _cache())[0]
    ints = parse_ints(p)
    assert ints["version"] == 3 and set(PARSE_INTS) <= set(ints) and ints["y_hat_q"]
    assert Dt.pinned_mismatch(v3[0], ints) == []
    assert Dt.pinned_mismatch(v3[0], {**ints, "y_hat_q": "0" * 16}) == [f"y_hat_q {'0' * 16} != pinned "
                                                                        f"{v3[0].expected['y_hat_q']}"]
    info = [{"stream": "/x/a.bit", "output": str(tmp_path / "a.png"), "symbols_sha256_16": ints["symbols"],
             "integers": ints}]
    res = Dc.parse_info("\n".join(map(json.dumps, info)), "", tmp_path)
    assert res["a.bit"]["version"] == 3 and res["a.bit"]["ints"]["y_hat_q"] == ints["y_hat_q"]


def _run(name: str, ints: dict | None, rgb: np.ndarray) -> Dc.DecodeRun:
    run = Dc.DecodeRun(name, 0, 0.0)
    run.results["v3.bit"] = {"symbols": "s", "rgb": rgb, "error": "", "ints": ints, "version": 3}
    return run


def test_a_y_hat_q_mismatch_fails_even_with_equal_symbols_and_pixels():
    rgb = np.zeros((4, 4, 3), np.uint8)
    ints = {"symbols": "s", "scale_idx": "i", "mu_q": "m", "y_hat_q": "y"}
    ref = _run("ref", ints, rgb)
    (c,) = Dc.compare_runs(ref, _run("other", dict(ints), rgb), ["v3.bit"])
    assert c.ok and c.version == 3
    (c,) = Dc.compare_runs(ref, _run("other", {**ints, "y_hat_q": "Y"}, rgb), ["v3.bit"])
    assert not c.ok and c.symbols_equal and c.max_diff == 0 and c.ints_differ == ("y_hat_q",)
    assert "y_hat_q" in c.what("ref")
    (c,) = Dc.compare_runs(ref, _run("other", {**ints, "scale_idx": "I"}, rgb), ["v3.bit"])
    assert not c.ok and "scale_idx" in c.what("ref")
    (c,) = Dc.compare_runs(ref, _run("other", None, rgb), ["v3.bit"])     # a decode that reports no integers
    assert not c.ok and "reported no parse integers" in c.error


# -- a slice-network perturbation, in the parity check (in process) and the determinism check (separate processes)


def shift_last_slice_mu(nets) -> None:
    """In place: the last slice network's first mu output + 1 (Q8): that slice's mu_q and y_hat_q move by one step,
    its scale indexes and every symbol stay (no later slice reads it), and pixels move by well under a level."""
    last = nets.cc[-1].layers[-1]
    last.bias[0] += 1 << (last.in_frac + last.w_frac - last.out_frac)


def perturbed_decoder_main(argv: list[str]) -> int:
    """The decoder's main() with shift_last_slice_mu applied to every v3 model it loads: a decode process whose
    v3 integers differ (for the determinism test below: conformance.children.worker decode --entry)."""
    from models.weights import ModelStore
    original = ModelStore.slice_nets

    def slice_nets(self, entry):
        nets = original(self, entry)
        if nets is not None and not getattr(nets, "_shifted", False):
            shift_last_slice_mu(nets)
            nets._shifted = True
        return nets
    ModelStore.slice_nets = slice_nets
    from decoder.__main__ import main
    return main(argv)


def test_slice_loop_perturbation_is_detected(tmp_path):
    """Parity: the v3 goldens' slice loop is exact under int64 / TF float64 / permuted BLAS order (and equals the
    decoder's parse); a slice loop with one shifted slice-network bias fails the check, naming the v3 stream."""
    ctx = _ctx(tmp_path)
    streams = ctx.v3_goldens()
    r = CheckResult("parity", True, "")
    P._hyper_part(ctx, r, streams)
    assert r.passed, [f.what for f in r.failures]
    table = next(t for t in r.tables if t.title.startswith("Integer slice loop"))
    assert len(table.rows) == len(streams) + 1                                 # every golden + one stress input
    assert all(row[2] == "v3" for row in table.rows) and [row[5] for row in table.rows[:3]] == ["yes"] * 3
    assert all(cell.startswith("0/") for row in table.rows for cell in row[6:])

    def shifted(nets, mu, ls, code, sym):
        nets = dataclasses.replace(nets, cc=[*nets.cc[:-1], _copy_net(nets.cc[-1])])
        shift_last_slice_mu(nets)
        return nets.loop(mu, ls, code, sym)
    r = CheckResult("parity", True, "")
    P._hyper_part(ctx, r, streams, slice_variants={"shifted-bias": shifted})
    assert not r.passed
    named = [f for f in r.failures if f.version == 3 and f.image]
    assert {f.image for f in named} == {s.image for s in streams}
    assert all("'shifted-bias' moved" in f.what for f in r.failures)
    assert "bitstream v3" in named[0].where()


def _copy_net(net):
    from models.charm import IntConvNet
    return IntConvNet([dataclasses.replace(l, weight=l.weight.copy(), bias=l.bias.copy()) for l in net.layers])


def test_parity_check_runs_on_the_v3_goldens(tmp_path):
    """The parity check itself (no GPU here: CPU perturbations) takes the v3 goldens and tables them as v3."""
    ctx = _ctx(tmp_path)
    r = P.check(ctx, gpus=[])
    assert [f.what for f in r.failures] == ["no streams to test (nothing was encoded)"]
    assert r.figures["v3_streams"] == 3 and r.figures["slice_loop_cases"] == 4
    assert "3 streams (3 v3)" in r.summary and r.summary.startswith(P.GPU_MSG)
    synth = next(t for t in r.tables if t.title.startswith("Float synthesis"))
    assert [row[2] for row in synth.rows] == ["v3"] * 3


def test_synthesis_perturbation_keeps_v3_parse(tmp_path):
    """Parity's float-weight perturbation covers v3: y_hat_q and symbols unchanged, reconstruction within a level."""
    ctx = _ctx(tmp_path)
    r = CheckResult("parity", True, "")
    P._synth_part(ctx, r, ctx.v3_goldens())
    assert r.passed, [f.what for f in r.failures]
    (t,) = r.tables
    assert [row[2] for row in t.rows] == ["v3"] * 3 and all(row[3] == "yes" for row in t.rows)


@pytest.mark.slow
def test_determinism_check_fails_on_a_v3_integer_mismatch(tmp_path, monkeypatch):
    """The determinism check end to end on the v3 goldens, in separate decode processes: a configuration whose slice
    network differs by one bias step (symbols, scale indexes and pixels within tolerance) FAILS on y_hat_q, per
    stream with its version; the in-process decode and the pinned hashes agree with the reference."""
    ctx = _ctx(tmp_path)
    bad = Dc.RuntimeConfig("shifted-slice", 1, dict(Dc.CONFIGS[0].env),
                           entry="conformance.test_v3:perturbed_decoder_main")
    for mod in (Dt, Dc):                         # the check reads the configurations, decode_runs runs them
        monkeypatch.setattr(mod, "configs_for", lambda ctx: (Dc.CONFIGS[0], bad))
    r = Dt.check(ctx)
    assert not r.passed
    assert r.failures[0].what == "no streams to test (nothing was encoded)"       # this context encoded nothing
    rest = r.failures[1:]
    names = {s.image for s in ctx.v3_goldens()}
    assert {f.image for f in rest} == names and all(f.version == 3 for f in rest), [f.what for f in rest]
    assert all(f.what == "shifted-slice: parse integers differ from t1-onednn0: y_hat_q" for f in rest), \
        [f.what for f in rest]
    per = next(t for t in r.tables if t.title.startswith("Per stream"))
    assert [row[2] for row in per.rows] == ["v3"] * 3 and all(row[8] == "yes" for row in per.rows)
    assert all(row[6] == "3/3" and row[7] == "y_hat_q: 2/3" for row in per.rows), per.rows
    assert r.figures["v3_streams"] == 3 and r.figures["streams_by_version"] == {"v3": 3}
    assert r.figures["max_recon_diff"] <= Dc.RECON_TOL                        # pixels alone would have passed


def test_failure_location_names_the_version():
    from conformance.report import Failure
    assert Failure("x", image="a.bit", target=0.25, version=3).where() == "a.bit, 0.25 bpp, bitstream v3"
    assert Failure("x", image="a.png", target=0.5).where() == "a.png, 0.50 bpp"
