"""The codec's optional stages hooks (models/stages.py: decoder.decode.decode_bytes(..., stages=...) and the
encoder's EncoderModels.stages), which the bench times with.

It must change nothing: the same pixels with and without it, every stage entered once in order, nested
where the bench expects (the parse's sub-stages inside "parse"), for bitstream v2 and v3.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from decoder import decode as D

GOLDEN_V3 = Path(__file__).resolve().parent / "expected" / "charm"


class Recorder:
    """A stages hook that records (depth, name) as each stage is entered and checks each one is left."""

    def __init__(self) -> None:
        self.entered: list[tuple[int, str]] = []
        self.open: list[str] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.entered.append((len(self.open), name))
        self.open.append(name)
        try:
            yield
        finally:
            assert self.open.pop() == name


def _decode_both_ways(data: bytes, registry: str) -> list[tuple[int, str]]:
    models = D.ModelCache(registry)
    plain = D.decode_bytes(data, models)
    rec = Recorder()
    hooked = D.decode_bytes(data, models, stages=rec)
    assert np.array_equal(plain, hooked) and plain.dtype == hooked.dtype == np.uint8
    assert rec.open == []
    return rec.entered


def test_hook_sees_every_v2_stage_and_changes_nothing(encoder, tiny_registry):
    rgb = np.random.default_rng(5).integers(0, 256, (80, 112, 3), dtype=np.uint8)
    data = encoder.encode_fixed(rgb, 0, 128)
    assert _decode_both_ways(data, str(tiny_registry)) == [
        (0, "parse"), (1, "parse.range_decode_z"), (1, "parse.hyper_synthesis_int"), (1, "parse.range_decode_y"),
        (0, "dequantize"), (0, "synthesis"), (0, "to_uint8")]


def test_hook_sees_the_v3_slice_loop_and_changes_nothing():
    data = next(iter(sorted(GOLDEN_V3.glob("*.bit")))).read_bytes()
    assert data[1] >> 4 == 3
    assert _decode_both_ways(data, str(GOLDEN_V3 / "registry.yaml")) == [
        (0, "parse"), (1, "parse.range_decode_z"), (1, "parse.hyper_synthesis_int"), (1, "parse.slice_loop"),
        (0, "dequantize"), (0, "synthesis"), (0, "to_uint8")]


def test_a_failing_stream_leaves_the_stage_it_failed_in(tiny_registry, encoder):
    """A corrupt payload raises DecodeError as before; the hook's context managers are exited on the way out."""
    import struct
    import zlib
    rgb = np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = bytearray(encoder.encode_fixed(rgb, 0, 128))
    body = data[:-4]
    body[-3:] = b"\xff\xff\xff"                       # garbage in y, valid CRC
    bad = bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))
    rec = Recorder()
    try:
        D.decode_bytes(bad, D.ModelCache(str(tiny_registry)), stages=rec)
    except D.DecodeError:
        pass
    assert rec.open == [] and rec.entered[0] == (0, "parse")


def test_encoder_hook_sees_its_stages_and_changes_nothing(tiny_registry):
    """The encoder's hook (EncoderModels.stages, the same models/stages.py protocol): the same stream with
    and without it, analysis with g_a, z's range coding and the integer h_s inside, then code with y's."""
    from encoder.api import Encoder
    rgb = np.random.default_rng(6).integers(0, 256, (80, 112, 3), dtype=np.uint8)
    enc = Encoder(str(tiny_registry))
    plain = enc.encode_fixed(rgb, 0, 128)
    rec = Recorder()
    enc.models.stages = rec
    hooked = enc.encode_fixed(rgb, 0, 128)
    assert hooked == plain and rec.open == []
    assert rec.entered == [(0, "analysis"), (1, "analysis.g_a"), (1, "range_encode"), (1, "analysis.hyper_synthesis_int"),
                           (0, "code"), (1, "range_encode")]
