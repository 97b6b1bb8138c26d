"""Golden streams: committed bitstreams made by the shipped models must decode as recorded (check 4).

  python -m conformance.golden                    # verify conformance/streams against the registry
  python -m conformance.golden --regenerate       # re-encode the crops with the registry's models

conformance/streams/ holds a few small streams (Kodak crops at a couple of
targets, plus one small stream for every model no target stream used) and
expected.json: for each stream its bytes and sha256, the parsed-symbol hash,
the reconstruction's pixel hash and its PSNR against the source crop, and the
registry's model hashes they were made with.

Verification: the stream files are unchanged, they parse to the recorded
symbols (exact), and the reconstruction is the recorded one (pixel hash). A
reconstruction that is not bit-exact but within PSNR_TOL dB of the recorded
PSNR is accepted with a note: only the float synthesis may differ between
machines. If the registry's models are not the ones the streams were made
with, the check FAILS with "no golden streams for this registry": it never
passes silently. Regenerate only when the shipped models change (then commit conformance/streams/);
into the committed folder, regeneration refuses untrained models unless --allow-untrained: golden
streams made by placeholder weights would pin nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conformance.common import GOLDEN_DIR, KODAK, fmt_db, json_safe, pixels_sha16, psnr, sha16
from conformance.report import CheckResult, Table
from models.cli import ArgumentParser, one_line_errors

EXPECTED = "expected.json"
FORMAT = 1
PSNR_TOL = 0.02
REGENERATE = "python -m conformance.golden --regenerate"
PROG = "conformance.golden"


@dataclass(frozen=True)
class Crop:
    source: str      # Kodak file name
    y: int
    x: int
    h: int
    w: int

    @property
    def tag(self) -> str:
        return f"{Path(self.source).stem}_y{self.y}x{self.x}_{self.h}x{self.w}"

    def load(self, kodak_dir: Path) -> np.ndarray:
        from encoder.imageio import load_rgb8
        img = load_rgb8(Path(kodak_dir) / self.source)
        crop = img[self.y:self.y + self.h, self.x:self.x + self.w]
        if crop.shape[:2] != (self.h, self.w):
            raise ValueError(f"{self.source} is too small for crop {self.tag}")
        return np.ascontiguousarray(crop)


CROPS = (Crop("kodim23.png", 100, 240, 128, 192), Crop("kodim05.png", 200, 300, 128, 192))
TARGETS = (0.12, 0.5)
COVERAGE = Crop("kodim23.png", 100, 240, 64, 64)   # one stream per model that no target stream used
COVERAGE_DELTA_CODE = 128                           # delta = 1: the model's natural rate


def registry_models(registry) -> list[list]:
    """[target index, model name, hash] for every registry entry: what the streams are tied to."""
    return [[e.target_index, e.name, e.hash] for e in registry.entries]


def generate(registry_arg: str | None, out_dir: str | os.PathLike = GOLDEN_DIR, kodak_dir: str | os.PathLike = KODAK,
             crops: tuple[Crop, ...] = CROPS, targets: tuple[float, ...] = TARGETS) -> dict:
    """Encode the crops with the registry's models, decode them, write streams and expected.json."""
    from conformance.decoding import decode_in_process
    from decoder import decode as D
    from encoder.api import Encoder
    from models.pngio import write_bytes_atomic
    from models.targets import rate_code
    from rate_control.search import Unreachable
    out, kodak_dir = Path(out_dir), Path(kodak_dir)
    enc = Encoder(registry_arg)
    registry = enc.models.registry
    made: list[tuple[str, Crop, np.ndarray, float | None, bytes, str]] = []
    for crop in crops:
        rgb = crop.load(kodak_dir)
        for t in targets:
            try:
                c, status = enc.encode(rgb, t, best_effort=False), "in band"
            except Unreachable as e:
                c, status = e.best, "unreachable (closest stream kept)"
            made.append((f"{crop.tag}_{rate_code(t)}.bit", crop, rgb, t, c.data, status))
    from decoder.bitstream import parse_header
    used = {registry.by_target(parse_header(m[4]).target_index).hash for m in made}
    cov_rgb = COVERAGE.load(kodak_dir)
    for k, entry in enumerate(enc.models.distinct_entries()):
        if entry.hash not in used:
            data = enc.encode_fixed(cov_rgb, k, COVERAGE_DELTA_CODE)
            made.append((f"{COVERAGE.tag}_{entry.name}_d{COVERAGE_DELTA_CODE}.bit", COVERAGE, cov_rgb, None, data,
                         "model coverage"))
    models = D.ModelCache(registry_arg)
    streams = []
    for name, crop, rgb, t, data, status in made:
        h, rec = decode_in_process(data, models)
        parsed_header = D.parse(data, models).header
        entry = registry.by_target(parsed_header.target_index)
        streams.append({"file": name, "source": crop.source, "crop": [crop.y, crop.x, crop.h, crop.w],
                        "source_sha256_16": pixels_sha16(rgb), "target": t, "status": status,
                        "target_index": parsed_header.target_index, "model": entry.name, "model_hash": entry.hash,
                        "delta_code": parsed_header.delta_code, "bytes": len(data),
                        "bpp": 8 * len(data) / (crop.h * crop.w), "stream_sha256_16": sha16(data),
                        "symbols_sha256_16": h, "recon_sha256_16": pixels_sha16(rec), "psnr_db": psnr(rec, rgb)})
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.bit"):
        old.unlink()
    for m in made:
        write_bytes_atomic(out / m[0], m[4])
    doc = {"format": FORMAT, "regenerate": REGENERATE, "registry_models": registry_models(registry),
           "streams": streams}
    tmp = out / (EXPECTED + ".tmp")
    tmp.write_text(json.dumps(json_safe(doc), indent=1) + "\n")
    os.replace(tmp, out / EXPECTED)
    return doc


def _no_golden(r: CheckResult, why: str) -> CheckResult:
    r.fail(f"no golden streams for this registry: {why}; regenerate on purpose with `{REGENERATE}`")
    r.summary = "no golden streams for this registry"
    return r


def verify(registry_arg: str | None, golden_dir: str | os.PathLike = GOLDEN_DIR,
           kodak_dir: str | os.PathLike = KODAK) -> CheckResult:
    """Decode every golden stream and compare with expected.json."""
    from conformance.decoding import decode_in_process
    from decoder import decode as D
    r = CheckResult("golden", True, "")
    gdir, kodak_dir = Path(golden_dir), Path(kodak_dir)
    models = D.ModelCache(registry_arg)
    exp_path = gdir / EXPECTED
    if not exp_path.is_file():
        return _no_golden(r, f"{exp_path} does not exist")
    try:
        exp = json.loads(exp_path.read_text())
        want, streams = exp["registry_models"], exp["streams"]
    except (ValueError, KeyError) as e:
        return _no_golden(r, f"{exp_path} is unreadable ({type(e).__name__})")
    have = registry_models(models.registry)
    if [list(x) for x in want] != have:
        fmt = lambda rows: ", ".join(f"{t}:{n}/{h}" for t, n, h in rows)   # noqa: E731
        r.figures.update(golden_models=fmt(want), registry_models=fmt(have))
        return _no_golden(r, f"they were made with models [{fmt(want)}], this registry ({models.registry.path}) "
                             f"has [{fmt(have)}]")
    rows, exact, sources = [], 0, {}
    for st in streams:
        f = gdir / st["file"]
        where = {"image": f"{st['source']} crop {st['crop']}", "target": st["target"], "stream": st["file"]}
        if not f.is_file():
            r.fail(f"golden stream {st['file']} is missing", **where)
            continue
        data = f.read_bytes()
        if sha16(data) != st["stream_sha256_16"] or len(data) != st["bytes"]:
            r.fail(f"golden stream file {st['file']} changed ({len(data)} B, sha {sha16(data)}; expected "
                   f"{st['bytes']} B, sha {st['stream_sha256_16']})", **where)
        try:
            h, rec = decode_in_process(data, models)
        except D.DecodeError as e:
            r.fail(f"decoder rejected golden stream {st['file']}: {e}", **where)
            rows.append([st["file"], st["bytes"], "rejected", "-", "-", "-"])
            continue
        p, src_note = None, ""
        key = (st["source"], tuple(st["crop"]))
        if key not in sources:
            try:
                y, x, hh, ww = st["crop"]
                src = Crop(st["source"], y, x, hh, ww).load(kodak_dir)
                sources[key] = src if pixels_sha16(src) == st["source_sha256_16"] else None
            except (OSError, ValueError):
                sources[key] = None
        src = sources[key]
        if src is not None:
            p = psnr(rec, src)
        else:
            src_note = f"source {st['source']} not available (or changed) under {kodak_dir}: PSNR not compared"
            if src_note not in r.notes:
                r.notes.append(src_note)
        want_psnr = float(st["psnr_db"])
        sym_ok = h == st["symbols_sha256_16"]
        rec_ok = pixels_sha16(rec) == st["recon_sha256_16"]
        if not sym_ok:
            r.fail(f"parsed symbols {h} != golden {st['symbols_sha256_16']}", **where)
        elif rec_ok:
            exact += 1
        elif p is not None and (abs(p - want_psnr) <= PSNR_TOL or math.isinf(p) and math.isinf(want_psnr)):
            r.notes.append(f"{st['file']}: symbols exact, reconstruction not bit-exact (float synthesis), "
                           f"PSNR {p:.4f} vs golden {want_psnr:.4f} dB")
        else:
            r.fail(f"reconstruction differs from golden (pixel hash {pixels_sha16(rec)} != {st['recon_sha256_16']}"
                   + (f", PSNR {p:.3f} vs {want_psnr:.3f} dB)" if p is not None else ", source unavailable)"), **where)
        rows.append([st["file"], st["bytes"], "yes" if sym_ok else "NO", "yes" if rec_ok else "no",
                     fmt_db(p), fmt_db(want_psnr)])
    r.tables.append(Table(f"Golden streams in {gdir}", ["stream", "bytes", "symbols match", "recon bit-exact",
                                                        "PSNR (dB)", "golden PSNR (dB)"], rows))
    r.figures.update(golden_streams=len(streams), bit_exact=exact, total_bytes=sum(s["bytes"] for s in streams))
    r.summary = (f"{len(streams)} golden streams ({r.figures['total_bytes']} B): {exact} bit-exact, "
                 f"{len(r.failures)} failure(s)")
    return r


def check(ctx) -> CheckResult:
    return verify(ctx.opts.registry, ctx.opts.golden_dir, ctx.opts.kodak_dir)


# -- the command line ------------------------------------------------------------------------------------

def _args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m conformance.golden", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regenerate", action="store_true",
                   help="encode the golden crops with the registry's models and rewrite the streams and expected.json")
    p.add_argument("--registry", default=None,
                   help="model registry YAML (default: $RATELOCK_REGISTRY or models/registry.yaml)")
    p.add_argument("--dir", default=str(GOLDEN_DIR), help=f"golden stream folder (default: {GOLDEN_DIR})")
    p.add_argument("--kodak", default=str(KODAK), help=f"folder holding the Kodak source images (default: {KODAK})")
    p.add_argument("--targets", default=None,
                   help="regeneration targets, comma-separated bpp (default: 0.12,0.5)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="allow regenerating the committed folder from models the registry marks trained: false")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _args(argv)
    return one_line_errors(PROG, lambda: _main(args), status=2)


def _main(args: argparse.Namespace) -> int:
    from models.runtime import configure
    configure()
    if args.regenerate:
        from models.weights import load_registry
        reg = load_registry(args.registry)
        untrained = sorted({e.name for e in reg.entries if not e.trained})
        if untrained and Path(args.dir).resolve() == GOLDEN_DIR.resolve() and not args.allow_untrained:
            print(f"{PROG}: error: registry {reg.path} has untrained models ({', '.join(untrained)}); refusing to "
                  f"overwrite the committed golden streams (use --allow-untrained or --dir)", file=sys.stderr)
            return 2
        targets = tuple(float(t) for t in args.targets.split(",")) if args.targets else TARGETS
        doc = generate(args.registry, args.dir, args.kodak, targets=targets)
        total = sum(s["bytes"] for s in doc["streams"])
        for s in doc["streams"]:
            print(f"{s['file']}: {s['bytes']} B, {s['bpp']:.4f} bpp ({s['status']}), model {s['model']} "
                  f"{s['model_hash']}, symbols {s['symbols_sha256_16']}, PSNR {s['psnr_db']:.2f} dB")
        print(f"wrote {len(doc['streams'])} streams ({total} B) and {EXPECTED} to {args.dir}")
        return 0
    r = verify(args.registry, args.dir, args.kodak)
    for f in r.failures:
        print(f"FAIL {f.where()}: {f.what}")
    for n in r.notes:
        print(f"note: {n}")
    print(f"golden: {'PASS' if r.passed else 'FAIL'}: {r.summary}")
    return 0 if r.passed else 1


if __name__ == "__main__":
    sys.exit(main())
