"""Robustness check: stand-in decoders that crash, hang, leak files or accept anything are all caught;
the real decoder survives the cases whose outcome is fixed by the format."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conformance.checks import robustness as Rb
from conformance.conftest import kodak_crop
from conformance.fuzz import mutate

STANDIN = "conformance.children.standins:"


@pytest.fixture(scope="module")
def bases(encoder) -> list[bytes]:
    ctx = SimpleNamespace(images=[SimpleNamespace(rgb=kodak_crop())], encoder=encoder)
    return Rb.base_streams(ctx)


@pytest.fixture(scope="module")
def hashes(encoder) -> dict[int, int]:
    return Rb.registry_hashes(encoder.models.registry)


def test_cases_are_seeded_and_reproducible(bases, hashes):
    a = mutate.generate(bases, 300, 7, hashes)
    b = mutate.generate(bases, 300, 7, hashes)
    c = mutate.generate(bases, 300, 8, hashes)
    assert len(a) == 300 and mutate.fingerprint(a) == mutate.fingerprint(b) != mutate.fingerprint(c)
    assert [x.kind for x in a[:len(bases)]] == ["control"] * len(bases)
    small = mutate.generate(bases, 40, 7, hashes)
    assert len(small) == 40 and sum(x.kind == "control" for x in small) == len(bases)
    kinds = {x.kind for x in a}
    assert {"truncate", "header", "length", "garbage", "flip", "flip-crc", "append"} <= kinds
    ids = [x.id for x in a]
    assert len(ids) == len(set(ids))


def test_header_mutations_keep_a_valid_crc(bases, hashes):
    """Header extremes must get past the CRC so that they reach the deeper checks."""
    import zlib

    from decoder import bitstream as B
    for c in mutate.structured(0, bases[0], hashes, 100_000_000):
        if c.kind == "header" and "without re-computing" not in c.detail:
            assert zlib.crc32(c.data[:-4]) == int.from_bytes(c.data[-4:], "big"), c.id
    huge = next(c for c in mutate.structured(0, bases[0], hashes, 100_000_000) if c.id == "b0-dims-65536x65536")
    assert B.parse_header(huge.data).width == 65536 and huge.expect == "reject"


def _case(kind="garbage", expect="reject", data=b"", cid="x"):
    return mutate.Case(cid, kind, "test case", data, expect)


def test_judge_applies_the_contract(tmp_path):
    from conformance.children.standins import _tiny_png

    def out(name, files=()):
        d = tmp_path / name
        d.mkdir()
        for f, data in files:
            (d / f).write_bytes(data)
        return d

    ok_reject = Rb.judge(_case(), "worker", 1, "ratelock-decode: error: bad\n", 0.1, out("a"))
    assert ok_reject.ok and ok_reject.outcome == "rejected"
    ok_decode = Rb.judge(_case(expect="decode"), "worker", 0, "", 0.1, out("b", [("out.png", _tiny_png())]))
    assert ok_decode.ok and ok_decode.outcome == "decoded"
    bad = {
        "accepted": Rb.judge(_case(), "worker", 0, "", 0.1, out("c", [("out.png", _tiny_png())])),
        "partial": Rb.judge(_case(), "worker", 1, "error: x\n", 0.1, out("d", [("out.png", b"\x89PNG")])),
        "tmp file": Rb.judge(_case(), "worker", 1, "error: x\n", 0.1, out("e", [(".out.png.abc.tmp", b"")])),
        "lines": Rb.judge(_case(), "worker", 1, "error: x\nmore\n", 0.1, out("f")),
        "traceback": Rb.judge(_case(), "worker", 1, "Traceback (most recent call last):\n  x\nE: y\n", 0.1, out("g")),
        "signal": Rb.judge(_case(), "cli", -11, "", 0.1, out("h")),
        "timeout": Rb.judge(_case(), "worker", None, "", 9.0, out("i"), timed_out=True, timeout=5),
        "no png": Rb.judge(_case(expect="either"), "worker", 0, "", 0.1, out("j", [("out.png", b"garbage")])),
        "valid rejected": Rb.judge(_case(expect="decode"), "worker", 1, "error: nope\n", 0.1, out("k")),
    }
    for name, res in bad.items():
        assert not res.ok, name
    assert "SIGSEGV" in bad["signal"].violation and "hang" in bad["timeout"].violation
    assert "partial" in bad["partial"].violation and "left file" in bad["tmp file"].violation


def _run_standin(tmp_path, fn, cases, **kw):
    return Rb.run_cases(cases, tmp_path, None, decoder_main=STANDIN + fn, warm=False,
                        case_timeout=kw.pop("case_timeout", 5), mem_limit_gb=kw.pop("mem_limit_gb", 4), **kw)


def test_partial_output_is_caught(tmp_path):
    res, _ = _run_standin(tmp_path, "partial", [_case(data=b"R" * 20)])
    assert not res[0].ok and "partial output" in res[0].violation


def test_crash_is_caught_and_the_run_goes_on(tmp_path):
    """A worker killed by a signal: that case is reported, the worker restarts, later cases still run."""
    cases = [_case(data=b"", cid="empty"), _case(data=b"R" * 20, cid="long")]
    res, starts = _run_standin(tmp_path, "crash", cases)
    assert res[0].outcome == "signal" and "SIGSEGV" in res[0].violation and res[0].id == "empty"
    assert res[1].ok and starts == 2


@pytest.mark.slow
def test_hang_is_caught_by_the_hard_timeout(tmp_path):
    """SIGALRM is blocked (as inside a C++ op): only the parent's hard timeout can end it."""
    cases = [_case(data=b"", cid="empty"), _case(data=b"R" * 20, cid="long")]
    res, starts = _run_standin(tmp_path, "hang", cases, case_timeout=1, hard_grace=2)
    assert res[0].outcome == "timeout" and "hang" in res[0].violation
    assert res[1].ok and starts == 2


def test_traceback_and_chatty_errors_are_caught(tmp_path):
    res, _ = _run_standin(tmp_path / "t", "traceback", [_case(data=b"R")])
    assert res[0].outcome == "escaped" and "RuntimeError" in res[0].violation
    res, _ = _run_standin(tmp_path / "c", "chatty", [_case(data=b"R")])
    assert "3 lines" in res[0].violation


def test_wrong_model_id_accepted_is_reported(tmp_path, bases, hashes):
    """A decoder that ignores the model id decodes the 'wrong model' cases: each is reported by id."""
    cases = [c for c in mutate.structured(0, bases[0], hashes, 100_000_000) if "hash-" in c.id]
    res, _ = _run_standin(tmp_path, "accept_all", cases)
    assert cases and all(not r.ok and "must be rejected" in r.violation and "wrong model id" in r.violation
                         for r in res)


def test_memory_is_capped_in_worker_and_cli(tmp_path):
    res, _ = _run_standin(tmp_path / "w", "hog", [_case(data=b"R")], mem_limit_gb=1)
    assert "MemoryError" in res[0].message, res[0]
    res = Rb.run_cli_cases([_case(data=b"R")], tmp_path / "c", None, cli=("-m", "conformance.children.standins", "hog"),
                           mem_limit_gb=1, timeout=30)
    assert "MemoryError" in res[0].message, res[0]


def test_real_cli_crash_is_caught(tmp_path):
    res = Rb.run_cli_cases([_case(data=b"", cid="empty")], tmp_path, None, cli=("-m", "conformance.children.standins", "crash"),
                           timeout=30)
    assert res[0].outcome == "signal" and "SIGSEGV" in res[0].violation


@pytest.mark.slow
def test_check_reports_failures_with_reproducers(tmp_path, encoder, tiny_registry):
    """The whole check (bases, cases, worker, real-CLI runs, report files) with an accept-everything decoder."""
    opts = SimpleNamespace(cases=30, quick=True, seed=0, case_timeout=5.0, mem_limit_gb=4.0, report_dir=tmp_path,
                           registry=str(tiny_registry))
    ctx = SimpleNamespace(opts=opts, work=tmp_path / "work", images=[SimpleNamespace(rgb=kodak_crop())],
                          encoder=encoder, registry=encoder.models.registry,
                          bar=lambda total, desc: __import__("tqdm").tqdm(total=total, disable=True))
    r = Rb.check(ctx, decoder_main=STANDIN + "accept_all", cli=("-m", "conformance.children.standins", "accept_all"))
    assert not r.passed and r.figures["cases"] == 30 and r.figures["cli_runs"] == Rb.QUICK_CLI
    assert any("must be rejected" in f.what and f.case for f in r.failures)
    saved = list((tmp_path / "robustness_failures").glob("*.bit"))
    assert saved and len(saved) == len({f.case for f in r.failures})
    rows = [json.loads(l) for l in (tmp_path / "robustness.jsonl").read_text().splitlines()]
    assert len(rows) == 30 + Rb.QUICK_CLI


@pytest.mark.slow
def test_real_decoder_survives_cases_with_a_fixed_outcome(tmp_path, bases, hashes, tiny_registry):
    """The real decoder (main() in the worker, plus real CLI runs): every control decodes, every provably
    invalid stream is rejected with one line, nothing is left behind, nothing crashes."""
    cases = [c for c in mutate.generate(bases, 160, 0, hashes, Rb.ROBUST_MAX_PIXELS) if c.expect != "either"]
    assert len(cases) >= 60
    res, starts = Rb.run_cases(cases, tmp_path, str(tiny_registry), case_timeout=30)
    bad = [f"{r.id}: {r.violation}" for r in res if not r.ok]
    assert not bad, bad
    assert starts == 1 and sum(r.outcome == "decoded" for r in res) == len(bases)
    wrong_id = next(c for c in cases if "hash-" in c.id)
    cli = Rb.run_cli_cases([wrong_id], tmp_path, str(tiny_registry))
    assert cli[0].outcome == "rejected" and cli[0].ok and "wrong weights" in cli[0].message, cli


# Regression: tensorflow-compression 2.14.1's OverflowDecode loops forever (`while (DecodeLinearly(...) == 0) ++n;`)
# when a garbage y substream runs out inside an escape code; a 29-byte stream with a 1x65536 header hung the
# decoder. Fixed by not using tfc's overflow coding: v2's escapes are bounded (models/coding.py), so this must pass.
@pytest.mark.slow
def test_decoder_does_not_hang_on_garbage_y(tmp_path, bases, hashes, tiny_registry):
    from decoder import bitstream as B
    rng = np.random.default_rng(1)
    h = B.unpack(bases[2]).header
    cases = [mutate.Case(f"hang-{i}", "header", "1x65536, random y, valid CRC",
                         mutate.raw_stream(target_index=h.target_index, model_hash16=h.model_hash16, width=1,
                                           height=65536, delta_code=h.delta_code, z=B.unpack(bases[2]).z,
                                           y=rng.bytes(int(rng.integers(4, 40)))), "either") for i in range(12)]
    res, _ = Rb.run_cases(cases, tmp_path, str(tiny_registry), case_timeout=4, hard_grace=2, stop_on_violation=True)
    bad = [f"{r.id}: {r.violation}" for r in res if not r.ok]
    assert not bad, bad
