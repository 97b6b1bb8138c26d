"""What a bench run measures: its arguments, the test images, the registry it runs on, and the worker runner."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.bench.measure import ROOT, child_env
from evaluation.datasets import KODAK
from models.cli import ArgumentParser

DEFAULT_SIZES = "768x512,1920x1080,3840x2160"
SIZE_8K = (7680, 4320)
ANCHORS = ("jpeg2000", "hevc")

V3_LABELS = ("v2", "v3")
MIB = 1 << 20


class BenchError(Exception):
    """Bad input or a failed worker: one line for the user."""


# --------------------------------------------------------------------------- arguments

def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    if not (1 <= w <= 65536 and 1 <= h <= 65536):
        raise BenchError(f"bad size {text!r}: sides must be 1..65536")
    return w, h


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m evaluation.bench", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma list of WxH (default {DEFAULT_SIZES})")
    p.add_argument("--runs", type=int, default=3, help="timed runs per operation; medians are reported (default 3)")
    p.add_argument("--registry", default=None,
                   help="model registry YAML (default: $RATELOCK_REGISTRY or models/registry.yaml; when it does "
                        "not exist, untrained full-width development models are built and used, with a note)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench"), help="output folder for bench.csv, "
                   "results.json, table.txt (default runs/bench)")
    p.add_argument("--skip-anchors", action="store_true", help="do not run JPEG 2000 / HEVC")
    p.add_argument("--include-8k", action="store_true",
                   help="also decode a 7680x4320 image (decode only: time and peak RSS; the stream is made by one "
                        "fixed-step encode, reported for information)")
    p.add_argument("--runs-8k", type=int, default=1, help="timed 8K decode runs (default 1)")
    p.add_argument("--target", type=float, default=0.25, help="bpp target of the rate-search encode (default 0.25)")
    p.add_argument("--hevc-qp", default="match",
                   help="x265 QP of the HEVC anchor, or 'match' (default): per image, the QP whose rate is closest "
                        "to --target (evaluation.ratematch; untimed set-up), so both codecs are timed at one rate")
    p.add_argument("--kodak", default=str(KODAK), help="Kodak folder (default ../shared/data/kodak)")
    p.add_argument("--image", default="kodim23.png", help="the 768x512 image, first tile of larger mosaics")
    p.add_argument("--dev-models", type=int, default=1, choices=(1, 2, 4, 8),
                   help="number of distinct untrained models in the development registry used when no registry "
                        "exists (default 1: one model for all targets; 8: one per target, as planned)")
    p.add_argument("--dev-dir", default=None, help="where development models are built / reused (default "
                   "$TMPDIR/ratelock_bench_models_K_<hash of the model-format sources>, so a format change rebuilds)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads in the decode workers (0 = default)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per worker process (default 3600)")
    p.add_argument("--inprocess", action="store_true",
                   help="run operations in this process (tests / debugging): peak RSS is then NOT per operation")
    p.add_argument("--keep-images", action="store_true", help="keep the generated images and streams")
    p.add_argument("--cli-runs", type=int, default=3,
                   help="whole `decoder/decode.sh` calls on the first size's stream, interleaved with as many bare "
                        "`python -c 'import tensorflow'` calls, for the CLI start-up figure; 0 skips it, as does "
                        "--inprocess (default 3)")
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="also time a rate-search encode with this many latent-refinement steps (encoder/refine.py; "
                        "`python -m encoder` uses 100) at each size, one run each: seconds, peak RSS, PSNR gain "
                        "(default 0: not run)")
    p.add_argument("--v3", action="store_true",
                   help="also compare bitstream v3 (channel-wise slices) with v2 on one full-size network (issue "
                        "18): decode time on Kodak (wall, CPU, v3/v2), kMAC/pixel of both decoders, and with "
                        "--include-8k both decoders' 8K decode time and peak RSS. The two models are built from "
                        "the committed base state by `python -m training.bench_models` (once, cached: --v3-dir)")
    p.add_argument("--v3-dir", default=None, help="where the v2/v3 bench models are built / reused (default "
                   "$TMPDIR/ratelock_bench_v3_<hash of their sources and the base state>)")
    p.add_argument("--v3-images", type=int, default=24, help="Kodak images in the v3 comparison (default 24: all)")
    p.add_argument("--v3-code", type=int, default=128, help="delta code of the v3 comparison's streams (default "
                   "128: delta 1)")
    p.add_argument("--startup-only", action="store_true",
                   help="only the start-up figures: one rate-search encode of the first size makes the stream, then "
                        "the start-up workers and the CLI calls (about a minute; no anchors, no 8K)")
    a = p.parse_args(argv)
    a.size_list = [parse_size(s) for s in a.sizes.split(",") if s.strip()]
    if a.hevc_qp != "match":
        try:
            a.hevc_qp = int(a.hevc_qp)
        except ValueError:
            raise BenchError(f"--hevc-qp must be an integer or 'match', not {a.hevc_qp!r}") from None
    if not a.size_list:
        raise BenchError("--sizes is empty")
    if a.runs < 1 or a.runs_8k < 1:
        raise BenchError("--runs must be >= 1")
    if a.cli_runs < 0:
        raise BenchError("--cli-runs must be >= 0")
    if a.v3_images < 1 or not 0 <= a.v3_code <= 255:
        raise BenchError("--v3-images must be >= 1 and --v3-code 0..255")
    return a


# --------------------------------------------------------------------------- images

def _load_png(path: Path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def make_image(width: int, height: int, kodak: Path, first: str):
    """HxWx3 uint8: `first` (768x512) at the top-left, then other landscape Kodak images, tiled and cropped.

    A mosaic of real photographs keeps the texture statistics of Kodak at any
    size (an upscaled image would be unrealistically smooth and cheap to code).
    Without Kodak, a synthetic smooth image with mild noise is used.
    """
    import numpy as np
    files = sorted(kodak.glob("kodim*.png")) if kodak.is_dir() else []
    if not files:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        base = 128 + 60 * np.sin(xx / 97.0)[..., None] * np.cos(yy / 53.0)[..., None] * np.array([1, .7, .4])
        noise = np.random.default_rng(0).normal(0, 6, (height, width, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8)
    order = [kodak / first] + [f for f in files if f.name != first]
    tiles = []
    for f in order:
        img = _load_png(f)
        if img.shape[:2] == (512, 768):
            tiles.append(img)
    th, tw = tiles[0].shape[:2]
    rows, cols = math.ceil(height / th), math.ceil(width / tw)
    out = np.empty((rows * th, cols * tw, 3), np.uint8)
    k = 0
    for r in range(rows):
        for c in range(cols):
            out[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tiles[k % len(tiles)]
            k += 1
    return np.ascontiguousarray(out[:height, :width])


# --------------------------------------------------------------------------- registry

def resolve_registry(args: argparse.Namespace, notes: list[str]) -> Path:
    explicit = args.registry or os.environ.get("RATELOCK_REGISTRY")
    path = Path(explicit) if explicit else ROOT / "models" / "registry.yaml"
    if path.is_file():
        return path
    if explicit:
        raise BenchError(f"registry {path} not found")
    dev = Path(args.dev_dir) if args.dev_dir else \
        Path(tempfile.gettempdir()) / f"ratelock_bench_models_{args.dev_models}_{_model_code_hash()}"
    reg = dev / "registry.yaml"
    notes.append(f"NOTE: {path.relative_to(ROOT)} does not exist; using {args.dev_models} untrained development "
                 f"model(s) (N=128, M=192, the trained architecture) from {reg}. Speed and memory do not depend on "
                 f"training; the bpp figures of ours are not meaningful.")
    if reg.is_file():
        return reg
    from models.targets import TARGETS
    dev.mkdir(parents=True, exist_ok=True)
    per = len(TARGETS) // args.dev_models
    for k in range(args.dev_models):
        targets = ",".join(str(t) for t in TARGETS[k * per:(k + 1) * per])
        cmd = [sys.executable, "-m", "training.export", "--seed", str(k + 1), "--name", f"bench{k}",
               "--num-filters", "128", "--latent-channels", "192",
               "--out-dir", str(dev), "--register", targets, "--registry", str(dev / "registry.tmp.yaml")]
        print(f"building development model {k + 1}/{args.dev_models} ...", file=sys.stderr, flush=True)
        r = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"building a development model failed: {r.stderr.strip().splitlines()[-1:]}")
    os.replace(dev / "registry.tmp.yaml", reg)
    return reg


# Source files that define the model file format: a cached development model is rebuilt when any changes.
MODEL_FORMAT_SOURCES = ("models/weights.py", "models/coding.py", "models/entropy.py", "models/scale_table.py",
                        "models/intnet.py", "models/transforms.py", "models/jax_transforms.py", "training/export.py")


def _model_code_hash(sources: tuple[str, ...] = MODEL_FORMAT_SOURCES) -> str:
    import hashlib
    h = hashlib.sha256()
    for rel in sources:
        p = ROOT / rel
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()[:10]


# What the v2/v3 bench pair is made of: rebuilt when any changes (the base state included).
V3_SOURCES = MODEL_FORMAT_SOURCES + ("models/charm.py", "training/charm.py", "training/bench_models.py",
                                     "training/configs/charm.yaml", "training/configs/base.yaml",
                                     "models/checkpoints/base.npz")


def resolve_v3_pair(args: argparse.Namespace) -> tuple[Path, dict]:
    """(registry, {'v2': entry, 'v3': entry}) of the v2/v3 bench models, built first if needed.

    evaluation/ may not import training/ (tests/test_structure.py): the models are built by running
    `python -m training.bench_models` in a subprocess, as the development models are by training.export.
    """
    from models.weights import bitstream_version, load_registry
    dev = Path(args.v3_dir) if args.v3_dir else \
        Path(tempfile.gettempdir()) / f"ratelock_bench_v3_{_model_code_hash(V3_SOURCES)}"
    reg = dev / "registry.yaml"
    if not reg.is_file():
        print(f"building the v2/v3 bench models into {dev} (python -m training.bench_models) ...", file=sys.stderr,
              flush=True)
        r = subprocess.run([sys.executable, "-m", "training.bench_models", "--out", str(dev)], cwd=ROOT, env=child_env(),
                           capture_output=True, text=True)
        if r.returncode != 0 or not reg.is_file():
            raise BenchError(f"building the v2/v3 bench models failed: {r.stderr.strip().splitlines()[-1:]}")
    pair: dict = {}
    for e in load_registry(reg).entries:
        pair.setdefault(f"v{bitstream_version(e.dec_path)}", e)
    if set(V3_LABELS) - set(pair):
        raise BenchError(f"{reg} needs a bitstream-v2 and a bitstream-v3 model, has {', '.join(sorted(pair))}")
    return reg, pair


def describe_registry(path: Path) -> str:
    import numpy as np

    from models.weights import load_registry
    reg = load_registry(path)
    by_hash: dict[str, list] = {}
    for e in reg.entries:
        by_hash.setdefault(e.hash, []).append(e)
    parts = []
    for h, es in by_hash.items():
        e = es[0]
        try:
            with np.load(e.dec_path) as f:
                w = json.loads(str(f["meta"]))["widths"]
            widths = f"N={w['num_filters']} M={w['latent_channels']}"
        except Exception as exc:  # noqa: BLE001 - description only
            widths = f"widths unknown ({type(exc).__name__})"
        from models.targets import TARGETS
        targets = ",".join(f"{TARGETS[x.target_index]:g}" for x in es)
        parts.append(f"{e.name} [{h}] {widths} {'trained' if e.trained else 'UNTRAINED'} -> {targets}")
    return f"{path}: {len(by_hash)} distinct model(s): " + "; ".join(parts)


# --------------------------------------------------------------------------- workers

@dataclass
class Runner:
    work: Path
    inprocess: bool
    timeout: float
    log: list[dict] = field(default_factory=list)
    n: int = 0

    def __call__(self, label: str, spec: dict) -> dict:
        self.n += 1
        tag = f"{self.n:02d}_{spec['op']}"
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {label} ...", file=sys.stderr, end="", flush=True)
        if self.inprocess:
            from evaluation.bench import worker
            try:
                res = worker.run(dict(spec, spawn_epoch=None))
            except Exception as e:  # noqa: BLE001
                res = {"op": spec["op"], "error": f"{type(e).__name__}: {e}"}
            res["rss_isolated"] = False
        else:
            spec_path, out_path = self.work / f"{tag}.spec.json", self.work / f"{tag}.result.json"
            spec = dict(spec, spawn_epoch=time.time())
            spec_path.write_text(json.dumps(spec))
            cmd = [sys.executable, "-m", "evaluation.bench.worker", str(spec_path), str(out_path)]
            try:
                r = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=self.timeout)
                stderr = r.stderr
            except subprocess.TimeoutExpired:
                r, stderr = None, f"timed out after {self.timeout:.0f} s"
            if out_path.is_file():
                res = json.loads(out_path.read_text())
            else:
                tail = " | ".join(stderr.strip().splitlines()[-3:])
                how = f"exit status {r.returncode}" if r is not None else "timeout"
                if r is not None and r.returncode < 0:
                    how = f"killed by signal {-r.returncode} (out of memory?)"
                res = {"op": spec["op"], "error": f"worker died ({how}): {tail}"}
            res["rss_isolated"] = True
        res["wall_s"] = time.time() - t0
        res["label"] = label
        msg = f" {res['wall_s']:.1f} s" + (f"  ERROR: {res['error']}" if "error" in res else "")
        print(msg, file=sys.stderr, flush=True)
        self.log.append(res)
        return res
