"""Determinism check: the comparison catches symbol and pixel differences; the suite run passes on the crops."""

from __future__ import annotations

import json

import numpy as np

from conformance import decoding as Dc
from conformance.conftest import check_of


def _run(name: str, items: dict) -> Dc.DecodeRun:
    run = Dc.DecodeRun(name, 0, 0.0)
    for stream, (sym, rgb) in items.items():
        run.results[stream] = {"symbols": sym, "rgb": rgb, "error": ""}
    return run


def test_compare_runs_catches_differences():
    a = np.zeros((4, 5, 3), np.uint8)
    one, two = a.copy(), a.copy()
    one[0, 0, 0], two[1, 1, 1] = 1, 2
    ref = _run("ref", {"s1": ("h1", a), "s2": ("h2", a), "s3": ("h3", a), "s4": ("h4", a)})
    other = _run("other", {"s1": ("h1", one), "s2": ("h2", two), "s3": ("XX", a)})
    other.stderr = "ratelock-decode: s4: corrupt stream: boom\n"
    c = {x.stream: x for x in Dc.compare_runs(ref, other, ["s1", "s2", "s3", "s4"])}
    assert c["s1"].ok and c["s1"].max_diff == 1                    # one level: allowed
    assert not c["s2"].ok and c["s2"].max_diff == 2                # two levels: fails
    assert not c["s3"].ok and not c["s3"].symbols_equal            # parse differs: fails even with equal pixels
    assert not c["s4"].ok and "boom" in c["s4"].error              # not decoded: fails, with the decoder's message


def test_parse_info_reads_json_lines_and_errors(tmp_path):
    out = json.dumps({"stream": "/x/a_025.bit", "output": str(tmp_path / "a_025.png"), "symbols_sha256_16": "ab",
                      "seconds": 0.1})
    res = Dc.parse_info(out + "\nnoise\n", "ratelock-decode: b_050.bit: CRC mismatch\n", tmp_path)
    assert res["a_025.bit"]["symbols"] == "ab" and res["b_050.bit"]["error"] == "CRC mismatch"


def test_parse_integers_are_compared_not_only_symbols():
    """A run whose y_hat_q / mu_q / scale indexes differ fails even when the symbol hash and pixels agree."""
    a = np.zeros((4, 5, 3), np.uint8)
    ints = {"symbols": "h", "scale_idx": "i", "mu_q": "m", "y_hat_q": None}
    ref = _run("ref", {"s": ("h", a)})
    other = _run("other", {"s": ("h", a)})
    ref.results["s"]["ints"], other.results["s"]["ints"] = ints, {**ints, "mu_q": "M"}
    (c,) = Dc.compare_runs(ref, other, ["s"])
    assert not c.ok and c.ints_differ == ("mu_q",) and "mu_q" in c.what("ref")


def test_configurations_cover_threads_onednn_and_blas():
    envs = [c.env for c in Dc.CONFIGS]
    assert {c.threads for c in Dc.CONFIGS} >= {1, 2}
    assert {e.get("TF_ENABLE_ONEDNN_OPTS") for e in envs} >= {"0", "1"}
    assert any("OPENBLAS_CORETYPE" in e for e in envs) and any("OMP_NUM_THREADS" in e for e in envs)
    assert len(Dc.QUICK_CONFIGS) >= 3 and Dc.QUICK_CONFIGS[0] is Dc.CONFIGS[0]


def test_suite_determinism_passes_on_crops(suite_runs):
    d = check_of(suite_runs["rep1"], "determinism")
    assert d["passed"], d["failures"]
    from conformance.conftest import CONFIGS
    assert d["figures"]["configurations"] == len(CONFIGS)
    assert d["figures"]["max_recon_diff"] <= Dc.RECON_TOL
    tables = {t["title"].split(" (")[0]: t for t in d["tables"]}
    enc = tables["Encoding the same image twice"]["rows"]
    assert all(row[1] == row[2] and row[1] > 0 for row in enc)      # identical bytes in-process and via the CLI
    dec = next(t for t in d["tables"] if t["title"].startswith("Decoding in separate processes"))
    names = [row[0] for row in dec["rows"]]
    assert names == list(CONFIGS) + ["in-process"]
    assert all(row[3] == row[4] for row in dec["rows"])              # every stream decoded, parse integers identical
    # The committed bitstream v3 goldens are always in (no flag), listed per stream with their version.
    from conformance.common import V3_GOLDEN_DIR
    from conformance.suite import load_v3_goldens
    v3 = {s.path.name for s in load_v3_goldens(V3_GOLDEN_DIR)}
    per = next(t for t in d["tables"] if t["title"].startswith("Per stream"))
    assert {row[0] for row in per["rows"] if row[2] == "v3"} == v3
    assert {row[2] for row in per["rows"] if row[0] not in v3} == {"v2"}
    assert all(row[8] == "yes" for row in per["rows"] if row[0] in v3)          # pinned symbols and y_hat_q
    n = len(CONFIGS) + 1
    assert all(row[5] == row[6] == f"{n}/{n}" and row[7].endswith(f": {n}/{n}") for row in per["rows"])
    assert d["figures"]["v3_streams"] == len(v3) and "3 v3" in d["summary"]
