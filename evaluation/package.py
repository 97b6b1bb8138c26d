"""Build and verify the challenge submission package.

python -m evaluation.package IMAGES_DIR --team NAME --out SUBMISSION_DIR [--targets all] [--allow-failures]

Layout of SUBMISSION_DIR:
  bitstreams/<TEAM>_<IMAGE>_<BR>.bits     BR = bpp x 100, three digits (0.06 -> 006)
  decoded/<TEAM>_<IMAGE>_<BR>.png         what the packaged decoder outputs
  results.csv                             image, target, real bpp, bytes, MSE, PSNR, band, hashes,
                                          and the JPEG AI metrics (evaluation.metrics) of each decode
  decoder/                                decoder container sources + decode-side models
                                          (docker build -f docker/Dockerfile decoder/)
  CONFORMANCE.md, conformance.json,       the conformance suite's report on these very streams
  conformance_rate.png                    (every stream's deviation against the band)
  MANIFEST.json                           versions and sha256 of every file
  VERIFY.md                               the verification report

Before the manifest is written, the conformance suite (python -m conformance)
runs on the package's own streams, not re-encoded ones: rate, determinism
(re-encode and decode under several runtime configurations), parity and
robustness (--conformance quick|full). Then the package is verified with the
*packaged* decoder (run from SUBMISSION_DIR/decoder in a separate process, not
the repository's), which must reproduce every PNG bit for bit; sizes, rates and
hashes are checked too. A package that fails either (any stream outside the
band, any conformance failure, any mismatch) is refused unless
--allow-failures, and then every failure is listed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.metrics import psnr_from_mse
from models.cli import ArgumentParser, one_line_errors

ROOT = Path(__file__).resolve().parent.parent
PROG = "evaluation.package"
# What the decoder container needs, relative to the repository root (docker/README.md): decoder/ and the
# codec core's modules by folder, as the Dockerfile copies them; the registry's decoder halves are added below.
DECODER_FILES = ["decoder", "models", "docker/Dockerfile", "docker/Dockerfile.gpu", "docker/entrypoint.py",
                 "docker/README.md", ".dockerignore"]
# Never packaged: encoder halves, training states, plots, design notes, and the weights folder (rebuilt below
# from the registry, so only the models it names travel).
DECODER_EXCLUDE = ("__pycache__", "*.pyc", "*.enc.npz", "checkpoints", "*.png", "README.md", "weights",
                   "registry.yaml")
TEAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")


class PackageError(ValueError):
    pass


def stream_name(team: str, image_stem: str, target: float) -> str:
    """Challenge convention: <TEAM>_<IMAGE>_<BR>.bits."""
    from models.targets import rate_code
    return f"{team}_{image_stem}_{rate_code(target)}.bits"


def parse_stream_name(name: str) -> tuple[str, str, float]:
    m = re.match(r"^([A-Za-z0-9-]+)_(.+)_(\d{3})\.bits$", name)
    if not m:
        raise PackageError(f"{name}: not <TEAM>_<IMAGE>_<BR>.bits")
    return m.group(1), m.group(2), int(m.group(3)) / 100


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Row:
    image: str
    width: int
    height: int
    target: float
    bpp: float
    bytes: int
    mse: float
    psnr: float
    within_band: bool
    stream: str
    stream_sha256: str
    png_sha256: str
    model: str
    delta_code: int
    scores: dict[str, float] = field(default_factory=dict)  # JPEG AI metrics of the decode (evaluation.metrics)


def _copy_decoder(dest: Path, registry: Path) -> None:
    import yaml

    from models.targets import TARGETS
    from models.weights import load_registry
    for rel in DECODER_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns(*DECODER_EXCLUDE))
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    reg = load_registry(registry)
    wdir = dest / "models" / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in reg.entries:
        shutil.copy2(e.dec_path, wdir / e.dec_path.name)
        rows.append({"target": TARGETS[e.target_index],
                     "name": e.name, "weights": f"weights/{e.prefix.name}", "hash": e.hash,
                     "trained": e.trained, "note": e.note})
    (dest / "models" / "registry.yaml").write_text(yaml.safe_dump({"models": rows}, sort_keys=False))


def build(images_dir: Path, team: str, out: Path, targets: list[float], registry: str | None,
          refine: int = 0) -> list[Row]:
    from tqdm import tqdm

    from decoder.api import decode_bytes
    from encoder.api import Encoder
    from encoder.imageio import image_paths, load_rgb8
    from evaluation import ffmpeg, metrics
    from models.pngio import write_bytes_atomic, write_png_atomic
    from models.targets import within_band
    from models.weights import registry_path
    if not TEAM_RE.match(team):
        raise PackageError(f"team name {team!r}: use letters, digits and '-', at most 32 characters")
    images = image_paths(images_dir)
    for sub in ("bitstreams", "decoded"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    enc = Encoder(registry, refine=refine)
    jai_names = tuple(n for n in metrics.JPEG_AI_NAMES if n != "vmaf" or ffmpeg.has_filter("libvmaf"))
    rows: list[Row] = []
    bar = tqdm(total=len(images) * len(targets), desc="packaging", unit="stream", file=sys.stderr)
    for img in images:
        rgb = load_rgb8(img)
        for t in targets:
            c = enc.encode(rgb, t, best_effort=True)
            name = stream_name(team, img.stem, t)
            sp, pp = out / "bitstreams" / name, out / "decoded" / (name[:-5] + ".png")
            write_bytes_atomic(sp, c.data)
            rec = decode_bytes(c.data, registry)
            write_png_atomic(pp, rec)
            mse = float(np.mean((rec.astype(np.float64) - rgb.astype(np.float64)) ** 2))
            bpp = 8 * sp.stat().st_size / (rgb.shape[0] * rgb.shape[1])
            rows.append(Row(img.name, rgb.shape[1], rgb.shape[0], t, bpp, sp.stat().st_size, mse,
                            psnr_from_mse(mse), within_band(bpp, t), name,
                            sha256(sp), sha256(pp), c.model, c.delta_code, metrics.jpeg_ai(rgb, rec, jai_names)))
            bar.update(1)
    bar.close()
    _copy_decoder(out / "decoder", registry_path(registry))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "width", "height", "target_bpp", "real_bpp", "bytes", "mse", "psnr_rgb",
                    "within_band", "bitstream", "bitstream_sha256", "decoded_sha256", "model", "delta_code",
                    *metrics.JPEG_AI_NAMES])
        for r in rows:
            w.writerow([r.image, r.width, r.height, f"{r.target:.2f}", f"{r.bpp:.6f}", r.bytes, f"{r.mse:.4f}",
                        f"{r.psnr:.4f}", int(r.within_band), r.stream, r.stream_sha256, r.png_sha256, r.model,
                        r.delta_code, *(f"{r.scores[n]:.6f}" if n in r.scores else "" for n in metrics.JPEG_AI_NAMES)])
    return rows


def conformance_gate(images_dir: Path, out: Path, rows: list[Row], registry: str | None, quick: bool = True,
                     cases: int | None = None, progress: bool = True, refine: int = 0) -> list[str]:
    """Runs the conformance suite on the package's streams as written; returns its failures, one line each.

    The suite names streams <stem>_<BR>.bit (the encoder CLI's convention, which
    its re-encode comparison relies on), so the package's streams are copied
    under those names into a scratch folder; the report lands in the package.
    """
    from conformance import report
    from conformance.suite import Options, StreamRec, run
    from models.targets import rate_code
    checks = ("rate", "determinism", "parity", "robustness")
    scratch = Path(tempfile.mkdtemp(prefix=".conformance.", dir=out))
    try:
        sdir = scratch / "streams"
        sdir.mkdir()
        recs = []
        for r in rows:
            stem = Path(r.image).stem
            dst = sdir / f"{stem}_{rate_code(r.target)}.bit"
            shutil.copyfile(out / "bitstreams" / r.stream, dst)
            recs.append(StreamRec(r.image, stem, r.target, dst, r.width, r.height, "ok", r.bpp, r.model,
                                  r.delta_code))
        opts = Options(images_dir, sorted({r.target for r in rows}), scratch, registry=registry, quick=quick,
                       checks=checks, cases=cases, progress=progress, refine=refine,
                       command=f"python -m {PROG} (conformance gate, {'quick' if quick else 'full'})")
        results, meta = run(opts, streams=recs)
        pj, pm = report.write(scratch, meta, results)
        (out / "CONFORMANCE.md").write_text(pm.read_text().replace("(rate.png)", "(conformance_rate.png)"))
        shutil.copyfile(pj, out / "conformance.json")
        if (scratch / "rate.png").is_file():
            shutil.copyfile(scratch / "rate.png", out / "conformance_rate.png")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    failures = []
    for r in results:
        print(f"conformance {'PASS' if r.passed else 'FAIL'}  {r.name:<12} {r.summary}", file=sys.stderr)
        failures += [f"conformance/{r.name}: {f.where()}: {f.what}" for f in r.failures]
        if not r.passed and not r.failures:
            failures.append(f"conformance/{r.name}: {r.summary}")
    return failures


def write_manifest(out: Path, team: str, targets: list[float], rows: list[Row]) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    manifest = {"team": team, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "targets": targets, "images": len({r.image for r in rows}), "streams": len(rows),
                "files": {str(p.relative_to(out)): sha256(p) for p in files}}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))


def verify(out: Path, timeout: float = 3600) -> list[str]:
    """Failures found by decoding with the packaged decoder and re-checking every figure."""
    from PIL import Image

    from models.targets import within_band
    failures: list[str] = []
    manifest = json.loads((out / "MANIFEST.json").read_text())
    for rel, digest in manifest["files"].items():
        p = out / rel
        if not p.is_file():
            failures.append(f"{rel}: listed in MANIFEST.json but missing")
        elif sha256(p) != digest:
            failures.append(f"{rel}: sha256 differs from MANIFEST.json (tampered or corrupted)")
    rows = list(csv.DictReader(open(out / "results.csv")))
    tmp = out / ".verify"
    shutil.rmtree(tmp, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(out / "decoder"), TF_CPP_MIN_LOG_LEVEL="3",
               RATELOCK_REGISTRY=str(out / "decoder" / "models" / "registry.yaml"))
    r = subprocess.run([sys.executable, "-m", "decoder", "--dir", str(out / "bitstreams"), str(tmp)],
                       cwd=out, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        failures += [f"packaged decoder: {l}" for l in r.stderr.strip().splitlines() if l][-20:]
    for row in rows:
        name = row["bitstream"]
        try:
            team, _, t = parse_stream_name(name)
        except PackageError as e:
            failures.append(str(e))
            continue
        if team != manifest["team"] or abs(t - float(row["target_bpp"])) > 1e-9:
            failures.append(f"{name}: name does not match team/target in results.csv")
        sp, dp = out / "bitstreams" / name, tmp / (name[:-5] + ".png")
        w, h = int(row["width"]), int(row["height"])
        if not sp.is_file():
            failures.append(f"{name}: missing")
            continue
        bpp = 8 * sp.stat().st_size / (w * h)
        if abs(bpp - float(row["real_bpp"])) > 1e-5:
            failures.append(f"{name}: size on disk gives {bpp:.5f} bpp, results.csv says {row['real_bpp']}")
        if not within_band(bpp, t):
            failures.append(f"{name}: {bpp:.4f} bpp is outside ±15 % of {t:.2f}")
        if sha256(sp) != row["bitstream_sha256"]:
            failures.append(f"{name}: stream sha256 differs from results.csv")
        if not dp.is_file():
            failures.append(f"{name}: packaged decoder produced no PNG")
            continue
        with Image.open(dp) as im:
            if im.size != (w, h):
                failures.append(f"{name}: decoded size {im.size} != {(w, h)}")
        if sha256(dp) != row["decoded_sha256"]:
            failures.append(f"{name}: packaged decoder's PNG differs from decoded/ (not bit-exact)")
    shutil.rmtree(tmp, ignore_errors=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    from encoder.refine import add_refine_option
    p = ArgumentParser(prog=f"python -m {PROG}", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", help="folder of source images")
    p.add_argument("--team", required=True, help="team name used in file names (letters, digits, '-')")
    p.add_argument("--out", required=True, help="submission folder to create (must not exist, or use --force)")
    p.add_argument("--targets", default="all", help="'all' or comma-separated bpp targets")
    p.add_argument("--registry", default=None, help="model registry YAML (default: models/registry.yaml)")
    p.add_argument("--allow-failures", action="store_true", help="keep a package that fails verification, listing why")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--verify-only", action="store_true", help="only verify an existing package")
    p.add_argument("--conformance", choices=("quick", "full"), default="quick",
                   help="conformance suite run on the package's streams before it is accepted: 'quick' "
                        "(determinism on the first 2 images, 3 runtime configurations, 100 robustness cases) or "
                        "'full' (every stream, 5 configurations, 300 cases); default quick")
    p.add_argument("--conformance-cases", type=int, default=None, metavar="N",
                   help="number of robustness cases in the conformance gate (default: the mode's number)")
    add_refine_option(p, note="every stream; the conformance gate re-encodes with the same")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return one_line_errors(PROG, lambda: _main(args))


def _main(args) -> int:
    out = Path(args.out)
    if not args.verify_only:
        from models.targets import parse_targets
        targets = parse_targets(args.targets)
        if out.exists():
            if not args.force:
                raise PackageError(f"{out} exists (use --force to replace it)")
            shutil.rmtree(out)
        rows = build(Path(args.images), args.team, out, targets, args.registry, args.refine)
        print(f"{len(rows)} streams written to {out}")
        conf_failures = conformance_gate(Path(args.images), out, rows, args.registry,
                                         quick=args.conformance == "quick", cases=args.conformance_cases,
                                         progress=not args.no_progress, refine=args.refine)
        write_manifest(out, args.team, targets, rows)
    else:
        conf_failures = []
    failures = conf_failures + verify(out)
    report = ["# Package verification", "", f"Package: `{out}`", "",
              f"Failures: {len(failures)}", ""] + [f"- {f}" for f in failures]
    (out / "VERIFY.md").write_text("\n".join(report) + "\n")
    if failures:
        for f in failures[:50]:
            print(f"{PROG}: FAIL: {f}", file=sys.stderr)
        if not args.allow_failures:
            if not args.verify_only:
                shutil.rmtree(out)
                print(f"{PROG}: package refused and removed ({len(failures)} failures; "
                      f"--allow-failures keeps it)", file=sys.stderr)
            return 1
        print(f"{PROG}: package kept despite {len(failures)} failures (--allow-failures)", file=sys.stderr)
        return 0
    print("verified: conformance passed; every stream decodes bit-exactly with the packaged decoder, "
          "within band, hashes match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
