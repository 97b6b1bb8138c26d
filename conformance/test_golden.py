"""Golden streams: generate -> verify passes -> a corrupted stream or a different registry is caught."""

from __future__ import annotations

import json
import shutil

from conformance import golden as G
from conformance.common import GOLDEN_DIR, KODAK, ROOT, sha16
from conformance.conftest import check_of
from conformance.fuzz import mutate


def _copy(src, tmp_path):
    d = tmp_path / "g"
    shutil.copytree(src, d)
    return d


def test_generated_streams_verify(tiny_registry, tiny_golden):
    exp = json.loads((tiny_golden / G.EXPECTED).read_text())
    assert len(exp["streams"]) >= 4 and sum(s["bytes"] for s in exp["streams"]) < 16_000
    assert {tuple(s["crop"][2:]) for s in exp["streams"] if s["status"] != "model coverage"} == {(128, 192)}
    r = G.verify(str(tiny_registry), tiny_golden, KODAK)
    assert r.passed, r.failures
    assert r.figures["bit_exact"] == len(exp["streams"])


def test_corrupted_byte_is_caught(tiny_registry, tiny_golden, tmp_path):
    d = _copy(tiny_golden, tmp_path)
    f = sorted(d.glob("*.bit"))[0]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    r = G.verify(str(tiny_registry), d, KODAK)
    assert not r.passed
    what = " ".join(x.what for x in r.failures)
    assert "changed" in what and "rejected" in what and f.name in what


def test_corruption_with_valid_crc_is_caught_by_symbols(tiny_registry, tiny_golden, tmp_path):
    """Even a stream whose CRC was re-computed cannot pass: its symbols (or its decode) differ."""
    d = _copy(tiny_golden, tmp_path)
    exp = json.loads((d / G.EXPECTED).read_text())
    f = d / exp["streams"][0]["file"]
    data = bytearray(f.read_bytes())
    data[-6] ^= 0x01                      # last y byte
    f.write_bytes(mutate.crc_fix(bytes(data)))
    exp["streams"][0]["stream_sha256_16"] = sha16(f.read_bytes())
    (d / G.EXPECTED).write_text(json.dumps(exp))
    r = G.verify(str(tiny_registry), d, KODAK)
    assert not r.passed
    assert any("symbols" in x.what or "rejected" in x.what or "reconstruction" in x.what for x in r.failures)


def test_other_registry_means_no_golden_streams(tiny_registry, tiny_golden, tmp_path):
    """Streams made by other models are never silently accepted: the check fails and says why."""
    import yaml
    reg = yaml.safe_load(tiny_registry.read_text())
    reg["models"][0]["hash"] = "00000000"
    other = tmp_path / "registry.yaml"
    for p in tiny_registry.parent.glob("*.npz"):
        (tmp_path / p.name).symlink_to(p)
    other.write_text(yaml.safe_dump(reg))
    r = G.verify(str(other), tiny_golden, KODAK)
    assert not r.passed and r.summary == "no golden streams for this registry"
    assert G.REGENERATE in r.failures[0].what
    r = G.verify(str(tiny_registry), tmp_path / "empty", KODAK)
    assert not r.passed and "no golden streams for this registry" in r.failures[0].what


def test_regenerate_cli_refuses_untrained_models_for_the_committed_folder(tiny_registry, monkeypatch):
    from conformance.golden import main

    def must_not_run(*a, **k):
        raise AssertionError("would have overwritten the committed golden streams")
    monkeypatch.setattr(G, "generate", must_not_run)
    assert main(["--regenerate", "--registry", str(tiny_registry)]) == 2


def test_suite_golden_check(suite_runs):
    g = check_of(suite_runs["rep1"], "golden")
    assert g["passed"], g["failures"]


def test_committed_golden_streams_match_the_shipped_registry():
    """The committed streams in conformance/streams against models/registry.yaml (once the trained models exist)."""
    assert (ROOT / "models" / "registry.yaml").is_file(), "models/registry.yaml is missing: no shipped models"
    r = G.verify(None, GOLDEN_DIR, KODAK)
    assert r.passed, "; ".join(f.what for f in r.failures)


def test_committed_golden_streams_exercise_escapes():
    """The escape path (bitstream v2) is pinned by the committed streams, not only by unit tests."""
    import numpy as np

    from decoder.decode import ModelCache, parse
    models, escapes = ModelCache(), 0
    for f in sorted(GOLDEN_DIR.glob("*.bit")):
        p = parse(f.read_bytes(), models)
        escapes += int(np.count_nonzero(models.get(p.header).y_table.escaped(p.symbols, p.scale_idx)))
    assert escapes > 0
