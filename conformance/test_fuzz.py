"""The three fuzz targets (conformance/fuzz/: parse, decode, PNG) keep their contracts and their corpora replay."""

from __future__ import annotations

import pytest

from conformance.common import ROOT

# -- the parse harness (conformance/fuzz/parse.py) and its committed corpus ----------------------------------
from conformance.fuzz import parse as FP  # noqa: E402


@pytest.fixture(scope="module")
def parse_target():
    """The harness on the shipped models (the corpus was found with them); every model loaded once."""
    from models.runtime import configure
    configure()
    return FP.ParseTarget()


def test_parse_corpus_replays(parse_target):
    """Every committed input keeps the contract, and the corpus still reaches every stage of the parse."""
    files = [p for p in sorted(FP.CORPUS.iterdir()) if p.is_file() and not p.name.startswith(".")]
    assert len(files) >= 20, "the committed parse corpus is missing or was emptied"
    assert sum(p.stat().st_size for p in FP.CORPUS.parent.rglob("*") if p.is_file()) < 2 << 20
    before = dict(parse_target.stats.outcomes)
    assert FP.replay(parse_target, FP.CORPUS) == []
    seen = {k for k, v in parse_target.stats.outcomes.items() if v > before.get(k, 0)}
    for stage in ("parsed", "CRC mismatch: stream is corrupt or", "corrupt stream: range decoder did not",
                  "corrupt stream: escapes in symbols (limit", "not a ratelock stream (bad magic)",
                  "z substream runs past the end", "stream was made with model but",
                  "image MP) exceeds the decoder's limit"):
        assert stage in seen, f"no corpus input reaches '{stage}' any more: {sorted(seen)}"


CHARM = ROOT / "tests" / "expected" / "charm"              # a tiny bitstream-v3 model and its streams


def test_parse_v3_corpus_replays():
    """The slice (v3) parse path: its corpus keeps the contract, and its streams parse to the header's shapes."""
    folder = FP.CORPUS.parent / "parse_v3"
    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    assert len(files) >= 10, "the committed v3 parse corpus is missing or was emptied"
    t = FP.ParseTarget(str(CHARM / "registry.yaml"))
    assert all(t(s) == "parsed" for s in FP.seeds(CHARM))
    assert FP.replay(t, folder) == []
    for stage in ("parsed", "corrupt stream: escapes in a slice", "corrupt stream: range decoder did not"):
        assert t.stats.outcomes.get(stage), f"no v3 corpus input reaches '{stage}': {sorted(t.stats.outcomes)}"


def test_parse_golden_seeds_parse_to_header_shapes(parse_target):
    for s in FP.seeds():
        assert parse_target(s) == "parsed"


def test_parse_harness_input_format():
    s = FP.seeds()[0]
    broken = s[:-1] + bytes([s[-1] ^ 1])                    # stale CRC
    assert FP.to_stream(broken) == broken[1:]
    assert FP.to_stream(b"\x01" + broken[1:]) == s[1:]       # flag bit 0: CRC re-computed
    assert FP.to_stream(b"") == b""


def test_parse_harness_flags_other_exceptions(parse_target, monkeypatch):
    monkeypatch.setattr(parse_target.D, "parse", lambda *a: (_ for _ in ()).throw(IndexError("boom")))
    with pytest.raises(FP.Finding, match="crash: parse raised IndexError"):
        parse_target(FP.seeds()[0])


def test_parse_harness_flags_a_slow_input(parse_target, monkeypatch):
    monkeypatch.setattr(parse_target, "hang_s", 1e-9)
    with pytest.raises(FP.Finding, match="hang"):
        parse_target(FP.seeds()[0])


def test_parse_harness_flags_allocation_over_the_header_bound(parse_target, monkeypatch):
    monkeypatch.setattr(parse_target.D, "estimated_peak_bytes", lambda w, h, n=128: 0)
    monkeypatch.setattr(FP, "TRACE_FLOOR", 0)
    with pytest.raises(FP.Finding, match="over-bound"):
        parse_target(FP.seeds()[0])


def test_parse_harness_flags_symbols_of_the_wrong_size(parse_target, monkeypatch):
    import dataclasses
    real = parse_target.D.parse
    monkeypatch.setattr(parse_target.D, "parse",
                        lambda *a: dataclasses.replace(p := real(*a), symbols=p.symbols[:, :-1]))
    with pytest.raises(FP.Finding, match="shape"):
        parse_target(FP.seeds()[0])


def test_parse_harness_skips_headers_over_the_campaign_cap(parse_target):
    from conformance.fuzz.mutate import raw_stream
    tall = b"\x00" + raw_stream(width=1, height=65536)        # 64x padding amplification: 4 MP of work
    assert parse_target.too_big(tall[1:])
    runs = parse_target.stats.runs
    assert parse_target(tall) == "skipped" and parse_target.stats.runs == runs


def test_stream_mutator_is_seeded_and_keeps_crc_mostly_valid():
    import random
    import zlib
    s = FP.seeds()[0][1:]
    hashes = [(0, 1)]
    a = [FP.mutate_stream(random.Random(3), s, s, hashes) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(0)
    outs = [FP.mutate_stream(rng, s, s, hashes) for _ in range(200)]
    valid = sum(len(o) >= 4 and zlib.crc32(o[:-4]) == int.from_bytes(o[-4:], "big") for o in outs)
    assert 120 <= valid < 200 and len(set(outs)) > 150


# -- the full-decode campaign (conformance/fuzz/decode.py) ---------------------------------------------------
from conformance.fuzz import decode as FD  # noqa: E402


def _cli_prefix() -> str:
    from decoder.__main__ import PROG
    return PROG


def test_decode_contract_checker(tmp_path):
    """Each way of breaking the CLI contract is caught; a clean refusal and a good PNG pass."""
    import numpy as np
    from PIL import Image
    s = FP.seeds()[-1][1:]                                  # a 64x64 golden stream
    out = tmp_path / "o"
    out.mkdir()
    dst = out / "out.png"
    one = f"{_cli_prefix()}: error: corrupt stream\n"
    assert FD.check_result(1, one, None, False, out, dst, s) is None
    assert "hang" in FD.check_result(None, "", None, True, out, dst, s)
    assert "exception out of main" in FD.check_result(None, "", "KeyError: x", False, out, dst, s)
    assert "traceback" in FD.check_result(1, "Traceback (most recent call last):\n", None, False, out, dst, s)
    assert "stderr lines" in FD.check_result(1, one + "UserWarning: x\n", None, False, out, dst, s)
    assert "stderr lines" in FD.check_result(1, "error without the program name\n", None, False, out, dst, s)
    assert "refused a valid stream" in FD.check_result(1, one, None, False, out, dst, s, "decode")
    (out / ".out.png.abc.tmp").write_bytes(b"partial")
    assert "left" in FD.check_result(1, one, None, False, out, dst, s)
    (out / ".out.png.abc.tmp").unlink()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(dst)
    assert FD.check_result(0, "", None, False, out, dst, s) is None
    assert "must be rejected" in FD.check_result(0, "", None, False, out, dst, s, "reject")
    Image.fromarray(np.zeros((64, 63, 3), np.uint8)).save(dst)
    assert "header says" in FD.check_result(0, "", None, False, out, dst, s)


def test_decode_campaign_cases_are_reproducible():
    a = FD.build_cases(700, 5, None, None)
    b = FD.build_cases(700, 5, None, None)
    assert a == b and len(a) == 700
    assert {e for _, _, e in a} >= {"decode", "reject", "either"}
    assert any(cid.startswith("corpus") for cid, _, _ in a) and any(cid.startswith("m0") for cid, _, _ in a)


def test_decode_campaign_in_process(tmp_path, monkeypatch):
    """A few mutated streams through decoder.__main__.main: the contract holds and decodes really happen."""
    import signal

    from decoder import decode as D
    monkeypatch.setattr(D, "ModelCache", D.ModelCache)        # undo the campaign's model sharing afterwards
    old = signal.getsignal(signal.SIGALRM)
    try:
        ti = FP.seeds()[0][2] & 7                            # one model only: loading all eight costs ~40 s
        cases = [c for c in FD.build_cases(2000, 0, None, None)
                 if c[0].startswith(("b0-control", "corpus", "m0")) and len(c[1]) > 1 and c[1][1] & 7 == ti]
        t = FD.run_inprocess(cases[:12], tmp_path, FD.MAX_PIXELS, 60, None, False, tmp_path / "fail", warm=1)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert t.failures == [] and t.cases == 12
    assert t.decoded >= 1 and t.rejected >= 1


# -- the PNG input path (conformance/fuzz/png.py) -------------------------------------------------------------
from conformance.fuzz import png as FG  # noqa: E402

PNG_CORPUS = ROOT / "conformance" / "fuzz_corpus" / "png"


def test_png_corpus_replays(tmp_path):
    files = sorted(PNG_CORPUS.glob("*.png"))
    assert len(files) >= 15, "the committed PNG corpus is missing or was emptied"
    t = FG.PngTarget(tmp_path)
    bad = [(p.name, t(p.read_bytes(), flatten)) for p in files for flatten in (False, True)]
    assert [b for b in bad if b[1]] == []
    assert t.t.loaded >= 3 and len(t.t.refusals) >= 10


def test_png_seeds_cover_the_format():
    """Every colour type and depth class is seeded, and every seed is a well-formed PNG."""
    names = dict(FG.seeds())
    for n in ("rgb8", "grey8", "grey1", "grey2", "la8", "rgba8", "palette4", "palette8-trns", "grey16", "rgb16",
              "rgba16", "la16", "rgb8-adam7", "apng"):
        assert n in names and FG.chunks(names[n]) is not None
    import io

    from PIL import Image
    with Image.open(io.BytesIO(names["rgb8-adam7"])) as a, Image.open(io.BytesIO(names["rgb8"])) as b:
        assert a.info.get("interlace") == 1 and a.tobytes() == b.tobytes()


def test_png_harness_flags_what_breaks_the_contract(tmp_path, monkeypatch):
    import numpy as np
    t = FG.PngTarget(tmp_path)
    rgb8 = dict(FG.seeds())["rgb8"]
    assert t(rgb8) is None and t.t.loaded == 1
    assert t(b"not a png") is None and t.t.refused == 1
    monkeypatch.setattr(t.io, "load_rgb8", lambda p, f=False: (_ for _ in ()).throw(KeyError("x")))
    assert "KeyError escaped" in t(rgb8)
    monkeypatch.setattr(t.io, "load_rgb8", lambda p, f=False: np.zeros((5, 5, 3), np.uint8))
    assert "IHDR says" in t(rgb8)

    def warn(p, f=False):
        import warnings
        warnings.warn("stray", stacklevel=2)
        return np.zeros((12, 17, 3), np.uint8)
    monkeypatch.setattr(t.io, "load_rgb8", warn)
    assert "warning leaked" in t(rgb8)
    monkeypatch.setattr(t.io, "load_rgb8", lambda p, f=False: np.zeros((12, 17, 3), np.uint8))
    monkeypatch.setattr(FG, "SLACK", -(1 << 40))
    t.last = 0
    assert "peak RSS" in t(rgb8)


# Findings of the PNG campaign in encoder/imageio.py, fixed there: regression tests (each failed before the fix:
# a Pillow exception or warning escaped, or a second IHDR let a 16-bit file through).
def _png_with(parts_edit, seed: str = "rgb8") -> bytes:
    parts = FG.chunks(dict(FG.seeds())[seed])
    return FG.assemble(parts_edit(parts))


def test_png_huge_dimensions_are_refused_as_input_error(tmp_path):
    import struct
    t = FG.PngTarget(tmp_path)
    data = _png_with(lambda p: [(b"IHDR", struct.pack(">IIBBBBB", 20000, 13000, 8, 2, 0, 0, 0))] + p[1:])
    assert t(data) is None


def test_png_second_ihdr_is_refused(tmp_path):
    import struct
    t = FG.PngTarget(tmp_path)
    data = _png_with(lambda p: p[:1] + [(b"IHDR", struct.pack(">IIBBBBB", 17, 13000, 16, 4, 0, 0, 0))] + p[1:],
                     "rgba8")
    assert t(data, True) is None and t.t.refused == 1     # before the fix: 13000x17 of made-up pixels, no error


def test_png_late_actl_does_not_warn(tmp_path):
    t = FG.PngTarget(tmp_path)
    data = _png_with(lambda p: p[:-1] + [(b"acTL", bytes(8))] + p[-1:])
    assert t(data) is None


def test_png_large_dimensions_do_not_warn(tmp_path):
    import struct
    t = FG.PngTarget(tmp_path)
    data = _png_with(lambda p: [(b"IHDR", struct.pack(">IIBBBBB", 13000, 13000, 8, 2, 0, 0, 0))] + p[1:])
    assert t(data) is None and t.t.refused == 1


def test_png_empty_late_iccp_is_refused(tmp_path):
    t = FG.PngTarget(tmp_path)
    data = _png_with(lambda p: p[:-1] + [(b"iCCP", b"")] + p[-1:])
    assert t(data) is None and t.t.refused == 1


def test_png_warning_during_open_does_not_leak(tmp_path):
    t = FG.PngTarget(tmp_path)
    data = _png_with(lambda p: [(b"acTL", bytes(8))] + p)
    assert t(data) is None and t.t.refused == 1
