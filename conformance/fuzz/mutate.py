"""Seeded, reproducible hostile streams for the robustness check and the fuzzer.

Each Case carries what a conforming decoder must do with it:
- "decode": an unmodified stream;
- "reject": provably invalid (bad magic/version/reserved bit, wrong model hash,
  size over the limit, truncated, CRC broken, a length past the end);
- "either": well-formed framing with a valid CRC but garbage inside; decoding
  or a clean rejection are both fine, a crash, hang or partial file is not.

Header mutations re-compute the CRC so that they get past the CRC check and
exercise the deeper checks (model lookup, size limits, range decoder).
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from decoder import bitstream as B

CRC32_HD4_BITS = 91607   # CRC-32/IEEE detects every error of <= 3 bits in codewords up to this length


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    detail: str
    data: bytes
    expect: str          # decode | reject | either


def crc_fix(data: bytes) -> bytes:
    """Replace the trailer with the CRC of everything before it."""
    body = data[:-B.TRAILER] if len(data) >= B.TRAILER else b""
    return body + struct.pack(">I", zlib.crc32(body))


def leb128(n: int) -> bytes:
    return B._leb128(n)


def raw_stream(magic: int = B.MAGIC, version: int = B.VERSION, reserved: int = 0, target_index: int = 0,
               model_hash16: int = 0, width: int = 1, height: int = 1, delta_code: int = 128,
               z: bytes = b"", y: bytes = b"", leb: bytes | None = None, crc: bool = True) -> bytes:
    """Any header, including values bitstream.pack refuses (width up to 65536, other versions, ...)."""
    vb = ((version & 0x0F) << 4) | ((reserved & 1) << 3) | (target_index & 0x07)
    body = struct.pack(">BBHHHB", magic & 0xFF, vb, model_hash16 & 0xFFFF, (width - 1) & 0xFFFF,
                       (height - 1) & 0xFFFF, delta_code & 0xFF) + (leb128(len(z)) if leb is None else leb) + z + y
    return body + (struct.pack(">I", zlib.crc32(body)) if crc else b"\0\0\0\0")


def _fields(base: bytes) -> dict:
    s = B.unpack(base)
    h = s.header
    return {"target_index": h.target_index, "model_hash16": h.model_hash16, "width": h.width, "height": h.height,
            "delta_code": h.delta_code, "z": s.z, "y": s.y}


def _size_expect(w: int, h: int, max_pixels: int) -> str:
    return "reject" if w * h > max_pixels else "either"


def structured(bi: int, base: bytes, hashes: Mapping[int, int], max_pixels: int) -> list[Case]:
    """The fixed part: every header field at its extremes, truncations at the header's boundaries."""
    f = _fields(base)
    n = len(base)
    cid = lambda k: f"b{bi}-{k}"   # noqa: E731
    out = [Case(cid("control"), "control", f"unmodified stream ({n} B)", base, "decode")]
    for off in sorted({0, 1, 2, 4, 8, 9, 10, 12, 13, 14, n // 2, n - 5, n - 4, n - 1}):
        if 0 <= off < n:
            out.append(Case(cid(f"trunc-{off}"), "truncate", f"first {off} of {n} bytes", base[:off], "reject"))

    def hdr(key: str, detail: str, expect: str, **kw) -> None:
        out.append(Case(cid(key), "header", detail, raw_stream(**{**f, **kw}), expect))

    for m in (0x00, 0x53, 0xFF):
        hdr(f"magic-{m:02x}", f"magic byte 0x{m:02x}", "reject", magic=m)
    for v in sorted({0, B.VERSION - 1, B.VERSION + 1, 15} - {B.VERSION}):
        hdr(f"version-{v}", f"bitstream version {v}", "reject", version=v)
    hdr("reserved", "reserved header bit set", "reject", reserved=1)
    for t in range(8):
        if t != f["target_index"]:
            hdr(f"target-{t}", f"target index {t} (model hash kept)",
                "either" if hashes.get(t) == f["model_hash16"] else "reject", target_index=t)
    for hv in sorted({f["model_hash16"] ^ 1, 0, 0xFFFF} - {f["model_hash16"]}):
        hdr(f"hash-{hv:04x}", f"model hash {hv:04x} (wrong model id)",
            "either" if hashes.get(f["target_index"]) == hv else "reject", model_hash16=hv)
    w, h = f["width"], f["height"]
    for (ww, hh) in [(1, 1), (65536, 65536), (65536, 1), (1, 65536), (65536, max_pixels // 65536),
                     (65536, max_pixels // 65536 + 1), (w + 1, h), (w, h + 64), (2 * w, 2 * h), (w, max(h - 1, 1))]:
        hdr(f"dims-{ww}x{hh}", f"width x height {ww}x{hh}", _size_expect(ww, hh, max_pixels), width=ww, height=hh)
    for d in sorted({0, 255, f["delta_code"] ^ 1}):
        hdr(f"delta-{d}", f"delta code {d}", "either", delta_code=d)
    z, y = f["z"], f["y"]
    zy = z + y
    for key, leb, detail, expect in [
        ("zlen-0", leb128(0), "z length 0 (z bytes read as y)", "either"),
        ("zlen+1", leb128(len(z) + 1), "z length + 1", "either"),
        ("zlen-all", leb128(len(zy)), "z length = whole payload (empty y)", "either"),
        ("zlen-past-end", leb128(len(zy) + 1), "z length one past the end", "reject"),
        ("zlen-max", bytes([0xFF, 0xFF, 0x7F]), "z length 2^21-1, past the end", "reject"),
        ("zlen-4bytes", bytes([0x80, 0x80, 0x80, 0x01]), "z length field of 4 bytes", "reject"),
    ]:
        out.append(Case(cid(key), "length", detail, raw_stream(**{**f, "z": b"", "y": zy}, leb=leb), expect))
    out.append(Case(cid("hdr-nocrc"), "header", "width + 1 without re-computing the CRC",
                    raw_stream(**{**f, "width": w + 1})[:-4] + base[-4:], "reject"))
    out.append(Case(cid("append"), "append", "one byte appended, CRC not updated", base + b"\0", "reject"))
    out.append(Case(cid("append-crc"), "append", "16 bytes appended to y, CRC re-computed",
                    crc_fix(base[:-4] + bytes(16) + base[-4:]), "either"))
    out.append(Case(cid("doubled"), "append", "stream written twice", base + base, "reject"))
    return out


def garbage(hashes: Mapping[int, int], rng: random.Random, max_pixels: int) -> list[Case]:
    """Files that were never streams, and framings with a valid CRC around nothing."""
    hv = next(iter(hashes.values()), 0)
    ti = next(iter(hashes.keys()), 0)
    big_h = max_pixels // 65536
    out = [Case("g-empty", "garbage", "empty file", b"", "reject"),
           Case("g-R", "garbage", "the magic byte alone", b"R", "reject"),
           Case("g-13", "garbage", "13 bytes: one short of the smallest stream",
                raw_stream(target_index=ti, model_hash16=hv)[:13], "reject"),
           Case("g-zeros14", "garbage", "14 zero bytes", bytes(14), "reject"),
           Case("g-png", "garbage", "a PNG signature", b"\x89PNG\r\n\x1a\n" + bytes(64), "reject")]
    for n in (16, 100, 1000, 65536):
        out.append(Case(f"g-random-{n}", "garbage", f"{n} random bytes", rng.randbytes(n), "reject"))
    out.append(Case("g-empty-payload", "garbage", "valid header 1x1, empty z and y, valid CRC",
                    raw_stream(target_index=ti, model_hash16=hv), "either"))
    out.append(Case("g-random-payload", "garbage", "valid header 64x64, 200 random payload bytes, valid CRC",
                    raw_stream(target_index=ti, model_hash16=hv, width=64, height=64, z=rng.randbytes(40),
                               y=rng.randbytes(160)), "either"))
    out.append(Case("g-huge-empty", "garbage", f"valid header 65536x{big_h} (just under the pixel limit), "
                    "empty payload, valid CRC", raw_stream(target_index=ti, model_hash16=hv, width=65536, height=big_h),
                    "either"))
    out.append(Case("g-huge-random", "garbage", f"valid header 65536x{big_h}, 4 KB random payload, valid CRC",
                    raw_stream(target_index=ti, model_hash16=hv, width=65536, height=big_h, z=rng.randbytes(1024),
                               y=rng.randbytes(3072)), "either"))
    return out


def random_case(i: int, bi: int, base: bytes, rng: random.Random) -> Case:
    """One seeded random mutation of a base stream."""
    n = len(base)
    kind = rng.choice(("truncate", "flip", "flip", "flip-crc", "flip-crc", "bytes-crc", "splice-crc"))
    cid = f"r{i:04d}-b{bi}-{kind}"
    if kind == "truncate":
        off = rng.randrange(0, n)
        return Case(cid, kind, f"first {off} of {n} bytes", base[:off], "reject")
    data = bytearray(base)
    if kind == "flip":
        k = rng.choice((1, 1, 2, 3))
        bits = rng.sample(range(8 * n), k)
        for b in bits:
            data[b // 8] ^= 0x80 >> (b % 8)
        expect = "reject" if k == 1 or 8 * n <= CRC32_HD4_BITS else "either"
        return Case(cid, kind, f"bits {bits} flipped, CRC not updated", bytes(data), expect)
    body = n - B.TRAILER
    if kind == "flip-crc":
        k = rng.choice((1, 2, 4, 8))
        bits = rng.sample(range(8 * body), min(k, 8 * body))
        for b in bits:
            data[b // 8] ^= 0x80 >> (b % 8)
        return Case(cid, kind, f"bits {bits} flipped, CRC re-computed", crc_fix(bytes(data)), "either")
    if kind == "bytes-crc":
        k = rng.choice((1, 2, 4))
        pos = sorted(rng.sample(range(body), min(k, body)))
        for p in pos:
            data[p] = rng.randrange(256)
        return Case(cid, kind, f"bytes {pos} randomised, CRC re-computed", crc_fix(bytes(data)), "either")
    a = rng.randrange(B.FIXED, body)
    if rng.random() < 0.5:
        ins = rng.randbytes(rng.randrange(1, 9))
        return Case(cid, kind, f"{len(ins)} random bytes inserted at {a}, CRC re-computed",
                    crc_fix(bytes(data[:a]) + ins + bytes(data[a:])), "either")
    k = rng.randrange(1, 9)
    return Case(cid, kind, f"{k} bytes deleted at {a}, CRC re-computed",
                crc_fix(bytes(data[:a]) + bytes(data[a + k:])), "either")


def generate(bases: list[bytes], n: int, seed: int, hashes: Mapping[int, int],
             max_pixels: int = 100_000_000) -> list[Case]:
    """About n cases: controls always; the fixed part sampled down or random mutations added up to n."""
    rng = random.Random(seed)
    fixed = garbage(hashes, rng, max_pixels)
    for bi, b in enumerate(bases):
        fixed += structured(bi, b, hashes, max_pixels)
    for bi in range(len(bases)):   # cross-model: one base's payload under another's header
        if len(bases) > 1:
            other = _fields(bases[(bi + 1) % len(bases)])
            mine = _fields(bases[bi])
            fixed.append(Case(f"b{bi}-cross", "splice", f"payload of base {(bi + 1) % len(bases)} under the header "
                              f"of base {bi}", raw_stream(**{**mine, "z": other["z"], "y": other["y"]}), "either"))
    controls = [c for c in fixed if c.kind == "control"]
    rest = [c for c in fixed if c.kind != "control"]
    if len(controls) + len(rest) > n:
        rest = sorted(rng.sample(rest, max(n - len(controls), 0)), key=rest.index)
        return controls + rest
    out = controls + rest
    i = 0
    while len(out) < n and bases:
        bi = rng.randrange(len(bases))
        out.append(random_case(i, bi, bases[bi], rng))
        i += 1
    return out


def fingerprint(cases: list[Case]) -> str:
    """One hash of the whole case set: equal seeds and base streams give equal fingerprints."""
    h = hashlib.sha256()
    for c in cases:
        h.update(c.id.encode() + b"\0" + c.data + b"\0" + c.expect.encode())
    return h.hexdigest()[:16]


# -- seeds and random mutations for the campaigns ------------------------------------------------------

GOLDEN = Path(__file__).resolve().parents[1] / "streams"


def seeds(golden: Path = GOLDEN) -> list[bytes]:
    """The golden streams, as harness inputs (CRC kept as it is: they are valid)."""
    out = [b"\x00" + p.read_bytes() for p in sorted(golden.glob("*.bit"))]
    if not out:
        raise ValueError(f"{golden}: no .bit seed streams")
    return out


# -- stream-aware random mutations (the parse target's random engine, and the decode target) --------------
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


def mutate_stream(rng: random.Random, base: bytes, other: bytes, hashes: list[tuple[int, int]]) -> bytes:
    """One to four stream-aware edits of base (a stream, not a harness input), CRC re-computed 85 % of the time."""
    d = bytearray(base)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        op = rng.randrange(11)
        n = len(d)
        if n == 0:
            d += rng.randbytes(rng.randrange(1, 32))
            continue
        i = rng.randrange(n)
        if op <= 2:
            d[i] ^= 1 << rng.randrange(8)
        elif op == 3:
            d[i] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        elif op == 4:
            d[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 5:
            del d[i:i + rng.randrange(1, 9)]
        elif op == 6:
            del d[rng.randrange(n):]
        elif op == 7 and n >= B.FIXED:            # header field at an extreme or a near value
            pos, width = rng.choice(((4, 2), (6, 2), (8, 1), (2, 2), (1, 1)))
            cur = int.from_bytes(d[pos:pos + width], "big")
            top = (1 << (8 * width)) - 1
            v = rng.choice((0, top, cur ^ 1, cur + 1, cur - 1, cur * 2 + 1, rng.randrange(top + 1))) & top
            if pos == 1:
                v = (cur & 0xF0) | (v & 0x0F)
            d[pos:pos + width] = v.to_bytes(width, "big")
        elif op == 8 and n >= B.FIXED and hashes:  # another registered (target, model) pair
            t, h16 = rng.choice(hashes)
            d[1] = (d[1] & 0xF8) | t
            d[2:4] = h16.to_bytes(2, "big")
        elif op == 9 and n > B.FIXED + 1:          # rewrite the z length, keeping z+y bytes
            try:
                s = B.unpack(crc_fix(bytes(d)))
            except B.BitstreamError:
                continue
            zy = s.z + s.y
            z = rng.choice((0, len(s.z) + 1, max(len(s.z) - 1, 0), len(zy), rng.randrange(len(zy) + 1)))
            d = bytearray(bytes(d[:B.FIXED]) + leb128(z) + zy + bytes(4))
        elif op == 10 and other:                   # splice: our prefix, the other stream's tail
            j = rng.randrange(len(other))
            d = d[:i] + bytearray(other[j:])
    out = bytes(d)
    return crc_fix(out) if rng.random() < 0.85 and len(out) >= 4 else out


def registry_hashes(registry: str | None = None) -> list[tuple[int, int]]:
    from models.weights import load_registry
    reg = load_registry(registry)
    out = []
    for t in range(8):
        try:
            out.append((t, reg.by_target(t).hash16))
        except KeyError:
            pass
    return out
