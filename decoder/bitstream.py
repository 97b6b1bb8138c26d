"""Bitstream v2 layout: the one module that owns it (spec: decoder/BITSTREAM.md).

    offset  size  field
    0       1     magic 0x52 ('R')
    1       1     version (high nibble, 2 or 3: decoder/BITSTREAM.md) | reserved bit 3 (= 0) | target index (bits 0-2)
    2       2     model hash: first 16 bits of sha256(<model>.dec.npz), big-endian
    4       2     width - 1, big-endian
    6       2     height - 1, big-endian
    8       1     delta code (delta = 2^((code - 128) / 32))
    9       1-3   z substream length in bytes, LEB128
    ...           z substream, then y substream (to the trailer)
    end-4   4     CRC-32 (zlib) of every byte before it, big-endian

Overhead: 14 bytes while z is under 128 bytes, 15 under 16 KiB, 16 under 2 MiB.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

# Default bound on W x H, from the header, before anything is allocated: the decoder's --max-pixels default
# and the encoder's input limit (~13K x 7.5K; 8K, 33 MP, measured at 3.3 GiB peak in evaluation/BENCH.md).
MAX_PIXELS = 100_000_000
MAGIC = 0x52
VERSION = 2
VERSIONS = (2, 3)    # 3: channel-wise autoregressive slices (models/charm.py); same layout, other y model
FIXED = 9            # bytes before the LEB128 length
TRAILER = 4
MAX_LEB_BYTES = 3    # z substream < 2 MiB; keeps the overhead <= 16 bytes
MAX_DIM = 1 << 16


class BitstreamError(ValueError):
    """A stream that a conforming decoder must reject."""


@dataclass(frozen=True)
class Header:
    target_index: int
    model_hash16: int
    width: int
    height: int
    delta_code: int
    version: int = VERSION


@dataclass(frozen=True)
class Stream:
    header: Header
    z: bytes
    y: bytes


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pack(header: Header, z: bytes, y: bytes) -> bytes:
    h = header
    if not 0 <= h.target_index < 8:
        raise ValueError("target index must fit 3 bits")
    if not (1 <= h.width <= MAX_DIM and 1 <= h.height <= MAX_DIM):
        raise ValueError(f"image size {h.width}x{h.height} outside 1..{MAX_DIM}")
    if not 0 <= h.delta_code <= 255:
        raise ValueError("delta code must fit 8 bits")
    if h.version not in VERSIONS:
        raise ValueError(f"bitstream version {h.version} is not one of {VERSIONS}")
    if len(z) >= 1 << (7 * MAX_LEB_BYTES):
        raise ValueError("z substream too long for this bitstream version")
    body = struct.pack(">BBHHHB", MAGIC, (h.version << 4) | h.target_index, h.model_hash16 & 0xFFFF,
                       h.width - 1, h.height - 1, h.delta_code) + _leb128(len(z)) + z + y
    return body + struct.pack(">I", zlib.crc32(body))


def overhead(z_len: int) -> int:
    return FIXED + len(_leb128(z_len)) + TRAILER


def parse_header(data: bytes) -> Header:
    """Fixed fields only, without the CRC check (used for bounds before anything else)."""
    if len(data) < FIXED + 1 + TRAILER:
        raise BitstreamError(f"stream too short ({len(data)} bytes)")
    magic, vb, hash16, w1, h1, code = struct.unpack(">BBHHHB", data[:FIXED])
    if magic != MAGIC:
        raise BitstreamError("not a ratelock stream (bad magic)")
    if vb >> 4 not in VERSIONS:
        raise BitstreamError(f"unsupported bitstream version {vb >> 4}")
    if vb & 0x08:
        raise BitstreamError("reserved header bit set")
    return Header(vb & 0x07, hash16, w1 + 1, h1 + 1, code, vb >> 4)


def unpack(data: bytes) -> Stream:
    header = parse_header(data)
    (crc,) = struct.unpack(">I", data[-TRAILER:])
    if zlib.crc32(data[:-TRAILER]) != crc:
        raise BitstreamError("CRC mismatch: stream is corrupt or truncated")
    pos, z_len = FIXED, 0
    for i in range(MAX_LEB_BYTES):
        b = data[pos]
        pos += 1
        z_len |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            break
    else:
        raise BitstreamError("z length field longer than 3 bytes")
    end = len(data) - TRAILER
    if pos + z_len > end:
        raise BitstreamError("z substream runs past the end of the stream")
    return Stream(header, data[pos:pos + z_len], data[pos + z_len:end])


def stream_version(data: bytes) -> int | None:
    """The bitstream version a stream's header declares (None if the header is unreadable)."""
    try:
        return parse_header(data).version
    except BitstreamError:
        return None
