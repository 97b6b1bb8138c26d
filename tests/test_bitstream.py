"""Header layout: round trip, overhead bound, a golden header, and every rejection rule."""

from __future__ import annotations

import struct
import zlib

import pytest

from decoder import bitstream as B

H = B.Header(target_index=2, model_hash16=0xBEEF, width=768, height=512, delta_code=131)


def test_round_trip():
    data = B.pack(H, b"zz" * 10, b"y" * 100)
    s = B.unpack(data)
    assert s.header == H and s.z == b"zz" * 10 and s.y == b"y" * 100


@pytest.mark.parametrize("z_len,expected", [(0, 14), (127, 14), (128, 15), (16383, 15), (16384, 16), ((1 << 21) - 1, 16)])
def test_overhead_at_most_16_bytes(z_len, expected):
    data = B.pack(H, b"\0" * z_len, b"")
    assert len(data) - z_len == expected == B.overhead(z_len)


def test_extreme_sizes_round_trip():
    for w, h in [(1, 1), (65536, 65536), (17, 3)]:
        hd = B.Header(7, 0, w, h, 255)
        assert B.unpack(B.pack(hd, b"", b"")).header == hd


def test_golden_header(regen):
    from tests.conftest import EXPECTED
    data = B.pack(H, b"z", b"y")
    path = EXPECTED / "header_v2.bin"
    if regen:
        path.write_bytes(data)
    assert data == path.read_bytes(), "bitstream v2 layout changed; bump VERSION or regenerate on purpose"


def _recrc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def _mutate(offset: int, value: int) -> bytes:
    body = bytearray(B.pack(H, b"z", b"y")[:-4])
    body[offset] = value
    return _recrc(bytes(body))


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"R\x10", "too short"),
    (_mutate(0, 0x53), "magic"),
    (_mutate(1, ((max(B.VERSIONS) + 1) << 4) | 2), "version"),   # 3 is v3 (decoder/BITSTREAM.md)
    (_mutate(1, (1 << 4) | 2), "version"),                 # v1 streams clamped latents; v2 escapes them
    (_mutate(1, (B.VERSION << 4) | 0x0A), "reserved"),
    (_recrc(B.pack(H, b"z", b"y")[:9] + b"\x80\x80\x80\x01"), "longer than 3"),
    (_recrc(B.pack(H, b"z", b"y")[:9] + b"\x7f" + b"abc"), "past the end"),
])
def test_rejects_malformed(data, message):
    with pytest.raises(B.BitstreamError, match=message):
        B.unpack(data)


def test_rejects_any_single_bit_flip():
    data = B.pack(H, b"zzzz", b"yyyyyyyy")
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(B.BitstreamError):
            B.unpack(bytes(bad))


def test_rejects_truncation():
    data = B.pack(H, b"zzzz", b"yyyyyyyy")
    for n in range(len(data)):
        with pytest.raises(B.BitstreamError):
            B.unpack(data[:n])


@pytest.mark.parametrize("kw", [dict(width=0), dict(height=65537), dict(delta_code=256), dict(target_index=8)])
def test_pack_refuses_out_of_range(kw):
    with pytest.raises(ValueError):
        B.pack(B.Header(**{**H.__dict__, **kw}), b"", b"")
