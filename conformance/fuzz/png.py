"""Fuzzing the encoder's image input path (encoder.imageio.load_rgb8) with malformed PNGs.

  python -m conformance.fuzz.png --cases 20000 [--seconds 300] [--subprocess 20] [--seed 0] [--out runs/fuzz-png]

Why: the encoder reads files a user hands it; a bad file must end in one line
(InputError), never a traceback, a hang or a memory blow-up, and a good one must
come back as exactly its pixels' HxWx3 uint8.

Seeds are PNGs made here in every colour type and bit depth the format has
(greyscale 1/2/4/8/16, RGB 8/16, palette with and without tRNS, grey+alpha, RGBA,
Adam7-interlaced, APNG). Mutations are chunk-aware (IHDR fields at extremes
including huge dimensions, chunks dropped, duplicated, reordered or inserted,
IDAT bytes flipped or replaced by a zlib bomb, chunk CRCs re-computed or not)
plus raw byte flips and truncations.

Contract per file: load_rgb8 returns a uint8 array of shape (H, W, 3) with W, H
from IHDR, or raises InputError; any other exception is a crash; no warning may
leak (a warning is a second stderr line in the CLI); CPU time per file under
--hang-s; the process's peak RSS, whenever it rises, stays under the warm
baseline plus a bound from IHDR (24 B per pixel + 64 MiB: Pillow's decode buffer,
an RGBA composite and the RGB array). A sample of the refused files also goes
through `encoder/encode.sh` itself: one stderr line, non-zero exit, no output.
"""

from __future__ import annotations

import io
import json
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.cli import one_line_errors

PROG = "conformance.fuzz.png"
ROOT = Path(__file__).resolve().parents[2]
SIG = b"\x89PNG\r\n\x1a\n"
BYTES_PER_PX = 24
SLACK = 64 << 20
HANG_S = 5.0


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def chunks(png: bytes) -> list[tuple[bytes, bytes]] | None:
    """(type, data) of every chunk, or None when the framing is broken."""
    if png[:8] != SIG:
        return None
    out, i = [], 8
    while i + 8 <= len(png):
        n = struct.unpack(">I", png[i:i + 4])[0]
        if i + 12 + n > len(png):
            return None
        out.append((png[i + 4:i + 8], png[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    return SIG + b"".join(chunk(k, d) for k, d in parts)


def ihdr(png: bytes) -> tuple[int, int] | None:
    """(width, height) from IHDR when the file starts like a PNG."""
    if png[:8] != SIG or len(png) < 24 or png[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", png[16:24])


def _raw_png(rows: list[bytes], w: int, h: int, depth: int, ctype: int, interlace: int = 0, extra=()) -> bytes:
    hdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    return assemble([(b"IHDR", hdr), *extra, (b"IDAT", zlib.compress(b"".join(rows))), (b"IEND", b"")])


def _adam7(img: np.ndarray) -> list[bytes]:
    """Rows (filter 0) of the seven Adam7 passes of an 8-bit image (h, w, c)."""
    rows = []
    for y0, x0, dy, dx in ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
                           (1, 0, 2, 1)):
        sub = img[y0::dy, x0::dx]
        if sub.size:
            rows += [b"\0" + r.tobytes() for r in sub]
    return rows


def seeds(rng: random.Random | None = None) -> list[tuple[str, bytes]]:
    """Small PNGs in every colour type, depth and layout the format allows (name, bytes)."""
    from PIL import Image
    rng = rng or random.Random(0)
    h, w = 12, 17
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 15, yy * 20, (xx + yy) * 8], -1).astype(np.uint8)
    out = []

    def pil(name, im, **kw):
        b = io.BytesIO()
        im.save(b, format="PNG", **kw)
        out.append((name, b.getvalue()))

    pil("rgb8", Image.fromarray(rgb))
    pil("grey8", Image.fromarray(rgb[..., 0]))
    pil("grey1", Image.fromarray(rgb[..., 0] > 100))
    pil("la8", Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA"))
    pil("rgba8", Image.fromarray(np.dstack([rgb, rgb[..., :1]])))
    pal = Image.fromarray(rgb).quantize(16)
    pil("palette4", pal, bits=4)
    pil("palette8-trns", pal, transparency=3)
    pil("grey16", Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).convert("I;16"))
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    pil("apng", frames[0], save_all=True, append_images=frames[1:], duration=100)
    rgb16 = (rgb.astype(">u2") * 257)
    out.append(("rgb16", _raw_png([b"\0" + r.tobytes() for r in rgb16], w, h, 16, 2)))
    rgba16 = np.dstack([rgb16, rgb16[..., :1]])
    out.append(("rgba16", _raw_png([b"\0" + r.tobytes() for r in rgba16], w, h, 16, 6)))
    la16 = np.dstack([rgb16[..., :1], rgb16[..., 1:2]])
    out.append(("la16", _raw_png([b"\0" + r.tobytes() for r in la16], w, h, 16, 4)))
    out.append(("rgb8-adam7", _raw_png(_adam7(rgb), w, h, 8, 2, interlace=1)))
    g2 = (rgb[..., 0] >> 6).astype(np.uint8)
    packed = [b"\0" + np.packbits(np.unpackbits(r[:, None], axis=1)[:, 6:].reshape(-1)).tobytes() for r in g2]
    out.append(("grey2", _raw_png(packed, w, h, 2, 0)))
    return out


# -- mutations --------------------------------------------------------------------------------------------
DIMS = (0, 1, 2, 64, 65535, 65536, 65537, 9000, 13000, 20000, 100000, 1 << 31, (1 << 32) - 1)


def _zlib_bomb(n: int) -> bytes:
    return zlib.compress(bytes(n), 9)


def mutate_png(rng: random.Random, base: bytes, other: bytes) -> bytes:
    """1-3 chunk-aware or raw edits; chunk CRCs re-computed unless a raw edit breaks them on purpose."""
    parts = chunks(base)
    raw = parts is None or rng.random() < 0.2
    if raw:
        d = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            if not d:
                break
            i = rng.randrange(len(d))
            op = rng.randrange(4)
            if op == 0:
                d[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                del d[i:]
            elif op == 2:
                d[i:i] = rng.randbytes(rng.randrange(1, 16))
            else:
                d[i] = rng.choice((0, 0xFF, 0x7F, 0x80))
        return bytes(d)
    parts = list(parts)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(10)
        idx = [i for i, (k, _) in enumerate(parts) if k == b"IHDR"]
        if op <= 2 and idx:                       # IHDR field
            i = idx[0]
            f = list(struct.unpack(">IIBBBBB", parts[i][1][:13])) if len(parts[i][1]) >= 13 else [1, 1, 8, 2, 0, 0, 0]
            which = rng.randrange(7)
            if which <= 1:
                f[which] = rng.choice(DIMS) if rng.random() < 0.7 else rng.randrange(1, 300)
                if rng.random() < 0.3:
                    f[1 - which] = rng.choice(DIMS)
            elif which == 2:
                f[2] = rng.choice((0, 1, 2, 3, 4, 8, 16, 32, 255))
            elif which == 3:
                f[3] = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 255))
            else:
                f[which] = rng.choice((0, 1, 2, 255))
            f = [v & (0xFFFFFFFF if j < 2 else 0xFF) for j, v in enumerate(f)]
            parts[i] = (b"IHDR", struct.pack(">IIBBBBB", *f))
        elif op == 3 and len(parts) > 1:          # drop a chunk
            del parts[rng.randrange(len(parts))]
        elif op == 4 and parts:                   # duplicate a chunk
            i = rng.randrange(len(parts))
            parts.insert(rng.randrange(len(parts) + 1), parts[i])
        elif op == 5 and len(parts) > 1:          # swap two chunks
            i, j = rng.randrange(len(parts)), rng.randrange(len(parts))
            parts[i], parts[j] = parts[j], parts[i]
        elif op == 6:                             # insert a chunk
            kind = rng.choice((b"PLTE", b"tRNS", b"acTL", b"fcTL", b"fdAT", b"gAMA", b"iCCP", b"zTXt", b"eXIf",
                               b"sBIT", b"IDAT", b"aBcD", b"IEND"))
            data = rng.choice((b"", rng.randbytes(rng.randrange(1, 64)), bytes(rng.randrange(1, 800)),
                               struct.pack(">II", rng.choice((0, 1, 2, 1 << 31)), 0)))
            if kind in (b"zTXt", b"iCCP") and rng.random() < 0.5:
                data = b"k\0\0" + _zlib_bomb(rng.choice((1 << 16, 1 << 22)))
            parts.insert(rng.randrange(min(1, len(parts)), len(parts) + 1), (kind, data))
        elif op == 7:                             # IDAT payload
            ids = [i for i, (k, _) in enumerate(parts) if k == b"IDAT"]
            if ids:
                i = rng.choice(ids)
                d = bytearray(parts[i][1])
                sub = rng.randrange(4)
                if sub == 0 and d:
                    d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
                elif sub == 1:
                    d = d[:rng.randrange(len(d) + 1)]
                elif sub == 2:
                    d = bytearray(_zlib_bomb(rng.choice((1 << 12, 1 << 20, 1 << 24))))
                else:
                    d = bytearray(zlib.compress(rng.randbytes(rng.randrange(1, 2000))))
                parts[i] = (b"IDAT", bytes(d))
        elif op == 8 and other:                   # splice chunks of another seed
            o = chunks(other) or []
            if o:
                parts.insert(rng.randrange(len(parts) + 1), rng.choice(o))
        else:                                     # truncate after assembling
            b = assemble(parts)
            return b[:rng.randrange(len(b))]
    out = assemble(parts)
    if rng.random() < 0.1:                        # a stale CRC somewhere
        d = bytearray(out)
        d[rng.randrange(8, len(d))] ^= 0x01
        out = bytes(d)
    return out


# -- the campaign -----------------------------------------------------------------------------------------
@dataclass
class Tally:
    cases: int = 0
    loaded: int = 0
    refused: int = 0
    huge: int = 0                                   # IHDR over 2^24 pixels
    failures: list = field(default_factory=list)
    refusals: dict = field(default_factory=dict)    # first words of InputError messages
    max_cpu_s: float = 0.0
    baseline_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    worst_rss_ratio: float = 0.0
    seconds: float = 0.0


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _key(msg: str) -> str:
    words = msg.split(": ", 1)[-1].replace(",", " ").split()
    return " ".join(w for w in words[:6] if not any(c.isdigit() for c in w))


class PngTarget:
    """load_rgb8 on one file, under the contract above."""

    def __init__(self, work: Path, hang_s: float = HANG_S):
        from encoder import imageio
        self.io = imageio
        self.path = work / "in.png"
        self.hang_s = hang_s
        self.t = Tally(baseline_rss_mb=_maxrss() / 2**20)
        self.key = ""
        self.base = self.last = _maxrss()

    def __call__(self, data: bytes, flatten: bool = False) -> str | None:
        """None when the contract holds, else what broke."""
        t = self.t
        self.path.write_bytes(data)
        dims = ihdr(data)
        t.cases += 1
        t.huge += bool(dims and dims[0] * dims[1] > 1 << 24)
        c0 = time.process_time()
        what, arr = None, None
        self.key = "loaded"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                arr = self.io.load_rgb8(self.path, flatten)
            except self.io.InputError as e:
                msg = str(e)
                if "\n" in msg or not msg:
                    what = f"InputError message is not one line: {msg[:200]!r}"
                self.key = _key(msg)
                t.refusals[self.key] = t.refusals.get(self.key, 0) + 1
            except Exception as e:  # noqa: BLE001 - the finding
                what = f"{type(e).__name__} escaped load_rgb8: {str(e).splitlines()[0][:200] if str(e) else ''}"
        cpu = time.process_time() - c0
        t.max_cpu_s = max(t.max_cpu_s, cpu)
        if what is None and caught:
            w = caught[0]
            what = f"warning leaked ({w.category.__name__}: {str(w.message)[:160]})"
        if what is None and cpu > self.hang_s:
            what = f"took {cpu:.1f} CPU s"
        if what is None and arr is not None:
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or (dims and arr.shape[:2] != dims[::-1]):
                what = f"returned {arr.shape} {arr.dtype}, IHDR says {dims}"
        peak = _maxrss()
        if peak > self.last:
            bound = (dims[0] * dims[1] * BYTES_PER_PX if dims else 0) + SLACK
            t.worst_rss_ratio = max(t.worst_rss_ratio, (peak - self.base) / bound)
            if what is None and peak - self.base > bound:
                what = f"peak RSS {(peak - self.base) >> 20} MiB above baseline, IHDR bound {bound >> 20} MiB"
            self.last = peak
        if what is None:
            t.loaded += arr is not None
            t.refused += arr is None
        return what


def run(n: int, seconds: float, seed: int, out: Path, progress: bool, hang_s: float,
        save_corpus: Path | None = None) -> Tally:
    from tqdm import tqdm
    rng = random.Random(seed)
    base = seeds(rng)
    with tempfile.TemporaryDirectory(prefix="fuzz_png.") as tmp:
        target = PngTarget(Path(tmp), hang_s)
        keep = _Keeper(save_corpus)
        for name, b in base:                      # the seeds themselves first
            if _record(target, name, b, out, False) is None:
                keep(f"seed-{name}", b, target.key)
        t0 = time.monotonic()
        bar = tqdm(total=n, desc="PNG inputs (load_rgb8)", unit="file", disable=not progress, file=sys.stderr,
                   mininterval=2)
        bar.update(len(base))
        i = 0
        while target.t.cases < n and not (seconds and time.monotonic() - t0 > seconds):
            a, b = rng.choice(base)[1], rng.choice(base)[1]
            data = mutate_png(rng, a, b)
            if rng.random() < 0.3:
                data = mutate_png(rng, data, b)
            if _record(target, f"m{i:06d}", data, out, rng.random() < 0.3) is None:
                keep(f"m{i:06d}", data, target.key)
            i += 1
            bar.update(1)
        bar.close()
        target.t.seconds = round(time.monotonic() - t0, 1)
        target.t.peak_rss_mb = _maxrss() / 2**20
        return target.t


class _Keeper:
    """Saves the first small file of every outcome (one per refusal message shape): the committed PNG corpus."""

    def __init__(self, folder: Path | None, max_bytes: int = 8192):
        self.folder, self.max_bytes, self.seen = folder, max_bytes, set()
        if folder:
            folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, data: bytes, key: str) -> None:
        if self.folder and key not in self.seen and len(data) <= self.max_bytes:
            self.seen.add(key)
            (self.folder / f"{name}.png").write_bytes(data)


def _record(target: PngTarget, cid: str, data: bytes, out: Path, flatten: bool) -> str | None:
    what = target(data, flatten)
    if what is not None:
        out.mkdir(parents=True, exist_ok=True)
        from conformance.common import sha16
        p = out / f"fail-{sha16(data)}.png"
        p.write_bytes(data)
        target.t.failures.append({"id": cid, "what": what, "file": str(p), "flatten_alpha": flatten})
    return what


def run_cli_sample(n: int, seed: int, out: Path, progress: bool) -> dict:
    """Refused files through encoder/encode.sh: non-zero exit, one stderr line, no output file."""
    from tqdm import tqdm

    from encoder.imageio import InputError, load_rgb8
    rng = random.Random(seed + 7)
    base = seeds(rng)
    res = {"runs": 0, "ok": 0, "failures": []}
    with tempfile.TemporaryDirectory(prefix="fuzz_png_cli.") as tmp:
        src, dst = Path(tmp) / "in.png", Path(tmp) / "out.bit"
        picked = []
        while len(picked) < n:
            data = mutate_png(rng, rng.choice(base)[1], rng.choice(base)[1])
            src.write_bytes(data)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    load_rgb8(src)
            except InputError:
                picked.append(data)
            except Exception:  # noqa: BLE001 - the in-process campaign reports these; the CLI must still cope
                picked.append(data)
        for data in tqdm(picked, desc="PNG inputs (encode.sh)", unit="process", disable=not progress, file=sys.stderr):
            src.write_bytes(data)
            r = subprocess.run(["bash", str(ROOT / "encoder" / "encode.sh"), str(src), "0.25", str(dst)], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            res["runs"] += 1
            if r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr and not dst.exists():
                res["ok"] += 1
            else:
                from conformance.common import sha16
                out.mkdir(parents=True, exist_ok=True)
                p = out / f"cli-{sha16(data)}.png"
                p.write_bytes(data)
                res["failures"].append({"file": str(p), "rc": r.returncode, "stderr": r.stderr[-600:]})
            dst.unlink(missing_ok=True)
    return res


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    from conformance.fuzz.campaign import campaign_parser
    p = campaign_parser(PROG, __doc__, cases=(20000, "files through load_rgb8"),
                        seconds=(0, "stop after this many seconds, 0 = no limit"),
                        subprocess=(10, "refused files also run through encode.sh"), registry=False, hang_s=HANG_S,
                        mem_limit_gb=(6.0, "RLIMIT_AS, 0 = none"), out=("runs/fuzz-png", "failing files and summary.json"))
    p.add_argument("--save-corpus", default=None, help="write one small file per distinct outcome to this folder")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {}
    if args.subprocess:
        res["encode.sh"] = run_cli_sample(args.subprocess, args.seed, out, not args.no_progress)
        c = res["encode.sh"]
        print(f"{PROG}: encode.sh: {c['runs']} refused files, {c['ok']} ended in one stderr line with no output; "
              f"{len(c['failures'])} failures", flush=True)
    from conformance.children.worker import set_memory_limit
    set_memory_limit(args.mem_limit_gb)
    t = run(args.cases, args.seconds, args.seed, out, not args.no_progress, args.hang_s,
            Path(args.save_corpus) if args.save_corpus else None)
    res["load_rgb8"] = asdict(t)
    (out / "summary.json").write_text(json.dumps(res, indent=1))
    kinds: dict[str, int] = {}
    for f in t.failures:
        k = f["what"].split(":")[0].split(" (")[0]
        kinds[k] = kinds.get(k, 0) + 1
    print(f"{PROG}: load_rgb8: {t.cases} files in {t.seconds:.0f} s ({t.cases / max(t.seconds, 1e-9):.0f}/s): "
          f"{t.loaded} loaded with IHDR's size, {t.refused} refused (InputError), {t.huge} with IHDR over 2^24 px; "
          f"{len(t.failures)} contract failures{' ' + str(kinds) if kinds else ''}; max CPU {t.max_cpu_s:.2f} s; "
          f"peak RSS {t.peak_rss_mb:.0f} MiB (baseline {t.baseline_rss_mb:.0f}), worst rise "
          f"{100 * t.worst_rss_ratio:.1f} % of the IHDR bound")
    seen = set()
    for f in t.failures:
        k = f["what"][:60]
        if k not in seen:
            seen.add(k)
            print(f"{PROG}: FAIL {f['id']}: {f['what']} ({f['file']})", file=sys.stderr)
    bad = t.failures or res.get("encode.sh", {}).get("failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
