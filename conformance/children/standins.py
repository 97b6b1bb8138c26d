"""Deliberately broken decoders, so the tests can prove the robustness check fails when it should.

Each takes the decoder's argv (input, output, ...) and returns an exit status,
like decoder.__main__.main. Also runnable as a CLI: `python -m conformance.children.standins NAME in out ...`.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import zlib
from pathlib import Path


def _io(argv: list[str]) -> tuple[bytes, Path]:
    return Path(argv[0]).read_bytes(), Path(argv[1])


def _reject(msg: str = "bad stream") -> int:
    print(f"standin: error: {msg}", file=sys.stderr)
    return 1


def _tiny_png() -> bytes:
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = zlib.compress(b"\x00\x00\x00\x00")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def partial(argv: list[str]) -> int:
    """Writes half a PNG, then fails: the 'no partial output' rule must catch it."""
    _, out = _io(argv)
    out.write_bytes(_tiny_png()[:20])
    return _reject("gave up half way")


def crash(argv: list[str]) -> int:
    """Segfaults on short inputs (as a C extension might); rejects everything else."""
    data, _ = _io(argv)
    if len(data) < 14:
        os.kill(os.getpid(), signal.SIGSEGV)
    return _reject()


def hang(argv: list[str]) -> int:
    """Spins with SIGALRM blocked on empty input, like a stuck C++ op; only the hard timeout can stop it."""
    data, _ = _io(argv)
    if not data:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            pass
    return _reject()


def accept_all(argv: list[str]) -> int:
    """Outputs a 1x1 image for anything, e.g. a stream with the wrong model id."""
    _, out = _io(argv)
    out.write_bytes(_tiny_png())
    return 0


def traceback(argv: list[str]) -> int:
    """Lets an exception escape: a traceback instead of a one-line error."""
    raise RuntimeError("unexpected\nsecond line")


def hog(argv: list[str]) -> int:
    """Tries to allocate 8 GiB: under the RLIMIT_AS cap this must fail, not succeed."""
    try:
        block = bytearray(8 << 30)
    except MemoryError:
        return _reject("MemoryError: 8 GiB refused")
    del block
    return _reject("allocated 8 GiB: no memory cap")


def chatty(argv: list[str]) -> int:
    """Rejects with a three-line message."""
    print("error: bad stream\n  detail 1\n  detail 2", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(globals()[sys.argv[1]](sys.argv[2:]))
