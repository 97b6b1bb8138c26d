"""Speed and memory benchmark: ratelock vs JPEG 2000 and HEVC intra on one machine.

    python -m evaluation.bench [--sizes 768x512,1920x1080,3840x2160] [--runs 3]
                               [--registry PATH] [--out OUTDIR] [--skip-anchors] [--include-8k]

Every operation runs in its own fresh process (`evaluation.bench_worker`), so
its peak RSS (VmHWM / ru_maxrss) and its start-up are its own. Inside a worker the
operation runs `--runs` times after a tiny warm-up (model load + tf.function
trace) and the median is reported. Test images are made on the fly from Kodak
(768x512: kodim23; larger sizes: a mosaic of Kodak images) in a temporary
folder that is deleted afterwards. Last, the CLI start-up figure: whole
`decoder/decode.sh` calls on the first size's stream against bare
`python -c "import tensorflow"` calls, interleaved (`--cli-runs`; `--startup-only`
measures only start-up, in about a minute). See evaluation/BENCH.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
from evaluation.datasets import KODAK  # noqa: E402

DEFAULT_SIZES = "768x512,1920x1080,3840x2160"
SIZE_8K = (7680, 4320)
ANCHORS = ("jpeg2000", "hevc")
GOAL_DECODE_S = 1.0            # 768x512 decode, start-up excluded
GOAL_SEARCH_RATIO = 2.0        # rate-search encode <= 2x fixed-step encode
GOAL_RSS_BYTES = 4e9           # 3840x2160 encode and decode peak RSS <= 4 GB
GOAL_CLI_BEYOND_TF_S = 1.0     # whole decoder/decode.sh call <= bare `import tensorflow` + 1 s (issue 17, item 7)
GOAL_V3_RATIO = 1.5            # bitstream v3 decode <= 1.5x v2 on CPU (issue 18)
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
    p = argparse.ArgumentParser(prog="python -m evaluation.bench", description=__doc__,
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
        r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
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
    from models.weights import bitstream_version
    from models.weights import load_registry
    dev = Path(args.v3_dir) if args.v3_dir else \
        Path(tempfile.gettempdir()) / f"ratelock_bench_v3_{_model_code_hash(V3_SOURCES)}"
    reg = dev / "registry.yaml"
    if not reg.is_file():
        print(f"building the v2/v3 bench models into {dev} (python -m training.bench_models) ...", file=sys.stderr,
              flush=True)
        r = subprocess.run([sys.executable, "-m", "training.bench_models", "--out", str(dev)], cwd=ROOT, env=_env(),
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

def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


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
            from evaluation import bench_worker
            try:
                res = bench_worker.run(dict(spec, spawn_epoch=None))
            except Exception as e:  # noqa: BLE001
                res = {"op": spec["op"], "error": f"{type(e).__name__}: {e}"}
            res["rss_isolated"] = False
        else:
            spec_path, out_path = self.work / f"{tag}.spec.json", self.work / f"{tag}.result.json"
            spec = dict(spec, spawn_epoch=time.time())
            spec_path.write_text(json.dumps(spec))
            cmd = [sys.executable, "-m", "evaluation.bench_worker", str(spec_path), str(out_path)]
            try:
                r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=self.timeout)
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


# --------------------------------------------------------------------------- formatting helpers

def fs(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def fmib(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"


def ratio(a: Any, b: Any) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def spread(res: dict | None) -> str:
    return f"{res['min_s']:.2f}-{res['max_s']:.2f}" if _ok(res) else "-"


def table(header: list[str], rows: list[list[str]]) -> str:
    cols = list(zip(header, *rows)) if rows else [(h,) for h in header]
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _ok(res: dict | None) -> bool:
    return bool(res) and "error" not in res


def _med(res: dict | None) -> float | None:
    return res.get("median_s") if _ok(res) else None


def _rss(res: dict | None) -> float | None:
    """Peak RSS of the operation: the worker itself, or its ffmpeg child for the ffmpeg anchors."""
    if not _ok(res):
        return None
    if res.get("op", "").startswith("anchor"):
        return max(res.get("peak_rss_mb", 0.0), res.get("peak_rss_children_mb", 0.0))
    return res.get("peak_rss_mb")


# --------------------------------------------------------------------------- main flow

def run_bench(args: argparse.Namespace) -> int:
    import numpy as np

    notes: list[str] = []
    registry = resolve_registry(args, notes)
    reg_desc = describe_registry(registry)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ratelock_bench_"))
    runner = Runner(work, args.inprocess, args.timeout)
    kodak = Path(args.kodak)
    if not kodak.is_dir():
        notes.append(f"NOTE: Kodak folder {kodak} not found: synthetic images are used.")
    anchors: list[str] = []
    if not args.skip_anchors and not args.startup_only:
        from evaluation import codecs
        for name in ANCHORS:
            why = codecs.make(name).unavailable()
            if why:
                notes.append(f"NOTE: anchor {name} skipped: {why}")
            else:
                anchors.append(name)
    for n in notes:
        print(n, file=sys.stderr)

    common = {"registry": str(registry), "threads": args.threads}
    results: dict[tuple[str, str, str], dict] = {}     # (size, codec, op) -> result
    started = time.time()
    try:
        sizes = list(args.size_list)
        first_stream = None
        for (w, h) in sizes:
            size = f"{w}x{h}"
            img = work / f"{size}.npy"
            np.save(img, make_image(w, h, kodak, args.image))
            stream = work / f"{size}.rlk"
            r = runner(f"{size} ours encode (rate search, target {args.target:g})",
                       {**common, "op": "encode_search", "image": str(img), "target": args.target,
                        "runs": 1 if args.startup_only else args.runs, "stream_out": str(stream)})
            results[size, "ours", "encode_search"] = r
            if args.refine > 0 and not args.startup_only:
                results[size, "ours", "encode_refine"] = runner(
                    f"{size} ours encode (rate search + {args.refine} refinement steps)",
                    {**common, "op": "encode_refine", "image": str(img), "target": args.target, "runs": 1,
                     "refine": args.refine})
            if args.startup_only:
                first_stream = stream if stream.is_file() else None
                img.unlink(missing_ok=True)
                break
            fixed = {"target_index": r.get("target_index"), "delta_code": r.get("delta_code", 128)} if _ok(r) else {}
            results[size, "ours", "encode_fixed"] = runner(
                f"{size} ours encode (fixed model/step)",
                {**common, "op": "encode_fixed", "image": str(img), "runs": args.runs,
                 "stream_out": str(work / f"{size}.fixed.rlk"), **fixed})
            rf = results[size, "ours", "encode_fixed"]
            if _ok(r) and _ok(rf):
                rf["same_stream_as_search"] = (work / f"{size}.fixed.rlk").read_bytes() == stream.read_bytes()
            src = stream if stream.is_file() else work / f"{size}.fixed.rlk"
            if src.is_file():
                if first_stream is None:
                    first_stream = src
                    results[size, "ours", "profile_synthesis"] = runner(
                        f"{size} ours synthesis profile (per layer)",
                        {**common, "op": "profile_synthesis", "stream": str(src), "runs": args.runs})
                results[size, "ours", "decode"] = runner(f"{size} ours decode",
                                                         {**common, "op": "decode", "stream": str(src),
                                                          "runs": args.runs})
            for name in anchors:
                knob = args.target if name == "jpeg2000" else args.hevc_qp
                if knob == "match":
                    m = runner(f"{size} {name} rate match to {args.target:g} bpp (set-up, untimed)",
                               {"op": "anchor_match", "codec": name, "knob": 0, "image": str(img),
                                "target": args.target})
                    results[size, name, "match"] = m
                    if not _ok(m):
                        continue
                    knob = m["knob"]
                ast = work / f"{size}.{name}"
                results[size, name, "encode"] = runner(
                    f"{size} {name} encode", {"op": "anchor_encode", "codec": name, "knob": knob, "image": str(img),
                                              "runs": args.runs, "stream_out": str(ast)})
                if ast.is_file():
                    results[size, name, "decode"] = runner(
                        f"{size} {name} decode", {"op": "anchor_decode", "codec": name, "knob": knob,
                                                  "stream": str(ast), "width": w, "height": h, "runs": args.runs})
            img.unlink(missing_ok=True)
        img8k = None
        if args.include_8k and not args.startup_only:
            w, h = SIZE_8K
            size = f"{w}x{h}"
            img = img8k = work / f"{size}.npy"
            np.save(img, make_image(w, h, kodak, args.image))
            last = next((results[s, "ours", "encode_search"] for s in reversed([f"{a}x{b}" for a, b in sizes])
                         if _ok(results.get((s, "ours", "encode_search")))), None)
            fixed = {"target_index": last["target_index"], "delta_code": last["delta_code"]} if last else {}
            stream = work / f"{size}.rlk"
            results[size, "ours", "encode_fixed"] = runner(
                f"{size} ours encode (fixed; only to make the 8K stream)",
                {**common, "op": "encode_fixed", "image": str(img), "runs": 1, "stream_out": str(stream), **fixed})
            if stream.is_file():
                results[size, "ours", "decode"] = runner(f"{size} ours decode",
                                                         {**common, "op": "decode", "stream": str(stream),
                                                          "runs": args.runs_8k})
        v3 = run_v3(args, runner, work, kodak, img8k) if args.v3 and not args.startup_only else None
        if img8k is not None:
            img8k.unlink(missing_ok=True)
        # Start-up: fresh processes that only get ready (import, registry, lazy model load, first-call trace).
        startup: dict[str, list[dict]] = {"decoder": [], "encoder": []}
        if first_stream is not None:
            for i in range(args.runs):
                startup["decoder"].append(runner(f"start-up decoder {i + 1}/{args.runs}",
                                                 {**common, "op": "startup_decode", "stream": str(first_stream)}))
        for i in range(args.runs):
            startup["encoder"].append(runner(f"start-up encoder {i + 1}/{args.runs}",
                                             {**common, "op": "startup_encode"}))
        cli = None
        if first_stream is not None and args.cli_runs and not args.inprocess:
            cli = cli_startup(first_stream, registry, args.cli_runs, work)
    finally:
        if not args.keep_images:
            shutil.rmtree(work, ignore_errors=True)
        else:
            notes.append(f"NOTE: images and streams kept in {work}")

    text = report(args, registry, reg_desc, notes, results, startup, anchors, time.time() - started, cli, v3)
    print(text)
    (out_dir / "table.txt").write_text(text + "\n")
    write_csv(out_dir / "bench.csv", results, startup, cli, v3)
    (out_dir / "results.json").write_text(json.dumps(
        {"command": command_line(), "registry": str(registry), "registry_description": reg_desc, "notes": notes,
         "results": [dict(r, size=k[0], codec=k[1], bench_op=k[2]) for k, r in results.items()],
         "startup": startup, "cli_startup": cli, "v3": v3}, indent=1, default=str))
    print(f"\nwrote {out_dir / 'table.txt'}, {out_dir / 'bench.csv'}, {out_dir / 'results.json'}", file=sys.stderr)
    failed = [r for r in runner.log if "error" in r] + [x for x in (cli, v3) if x and "error" in x]
    return 1 if failed else 0


def run_v3(args: argparse.Namespace, runner: Runner, work: Path, kodak: Path, image_8k: Path | None) -> dict:
    """Bitstream v3 against v2 on one network (--v3): Kodak decodes, interleaved in one worker, then the 8K pair.

    Both models' streams of an image are made at the same delta code (--v3-code); the v3 model's slice nets
    start at zero output (training/bench_models.py), so both code the same symbols and the decode times
    differ by the slice loop alone.
    """
    try:
        registry, pair = resolve_v3_pair(args)
    except BenchError as e:
        return {"error": str(e)}
    v3: dict[str, Any] = {"registry": str(registry), "description": describe_registry(registry), "code": args.v3_code,
                          "models": {k: {"name": e.name, "target_index": e.target_index} for k, e in pair.items()}}
    spec = {"registry": str(registry), "threads": args.threads}
    files = sorted(kodak.glob("kodim*.png"))[:args.v3_images] if kodak.is_dir() else []
    if not files:
        v3["error"] = f"no Kodak images in {kodak} (the v3 comparison decodes Kodak)"
        return v3
    out = work / "v3"
    out.mkdir(exist_ok=True)
    enc = v3["encode"] = runner(
        f"v3 vs v2: encode {len(files)} Kodak images with both models at delta code {args.v3_code} (set-up)",
        {**spec, "op": "encode_set", "images": [str(f) for f in files], "delta_code": args.v3_code,
         "models": {k: pair[k].target_index for k in V3_LABELS}, "out_dir": str(out)})
    if _ok(enc):
        v3["decode"] = runner(
            f"v3 vs v2: decode {len(files)} Kodak images x {args.runs} run(s), interleaved",
            {**spec, "op": "decode_set", "labels": list(V3_LABELS), "runs": args.runs,
             "streams": [{k: s[k] for k in ("image", "label", "path")} for s in enc["streams"]]})
    else:
        v3["decode"] = {"error": f"encoding the Kodak streams failed: {enc.get('error')}"}
    if image_8k is not None:
        size = f"{SIZE_8K[0]}x{SIZE_8K[1]}"
        v3["8k"] = {}
        for k in V3_LABELS:
            stream = out / f"{size}.{k}.rlk"
            e = runner(f"{size} {k} bench model encode (fixed; only to make the stream)",
                       {**spec, "op": "encode_fixed", "image": str(image_8k), "runs": 1, "stream_out": str(stream),
                        "target_index": pair[k].target_index, "delta_code": args.v3_code})
            v3["8k"][k] = {"encode": e}
            if stream.is_file():
                v3["8k"][k]["decode"] = runner(f"{size} {k} bench model decode",
                                               {**spec, "op": "decode", "stream": str(stream), "runs": args.runs_8k})
    return v3


# --------------------------------------------------------------------------- CLI start-up

CLI_CALLS = ("import_tensorflow", "import_tensorflow_as_decoder", "decode_sh")
CLI_LABELS = {"import_tensorflow": 'python -c "import tensorflow"',
              "import_tensorflow_as_decoder": "TF imported as the decoder does",
              "decode_sh": "decoder/decode.sh IN.bit OUT.png"}


def cli_startup(stream: Path, registry: Path, runs: int, work: Path) -> dict:
    """What a user's decode costs: whole `decoder/decode.sh STREAM OUT.png` calls vs bare
    `python -c "import tensorflow"` calls, interleaved so all see the same machine at the same moment.

    A third call imports TensorFlow as the decoder does (models.runtime.import_tensorflow: without the
    JAX import TensorFlow makes on the side when jax is installed), so the report can tell the decode's
    own cost from what skipping JAX saves. All run the same interpreter: decode.sh's own (.venv) when
    this is it, else this one through $RATELOCK_PYTHON. Wall seconds per call (perf_counter around the
    child) and its CPU seconds (user + sys of the waited-for children); medians, and the differences.
    """
    from decoder.bitstream import parse_header
    env = _env()
    venv_py = ROOT / ".venv" / "bin" / "python"
    if Path(sys.executable).absolute() != venv_py.absolute():
        env["RATELOCK_PYTHON"] = sys.executable
    out = work / "cli_startup.png"
    cmds = {"import_tensorflow": [sys.executable, "-c", "import tensorflow"],
            "import_tensorflow_as_decoder": [sys.executable, "-c",
                                             "from models.runtime import import_tensorflow; import_tensorflow()"],
            "decode_sh": ["bash", str(ROOT / "decoder" / "decode.sh"), str(stream), str(out),
                          "--registry", str(registry)]}
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(runs):
        for name, cmd in cmds.items():
            print(f"[{time.strftime('%H:%M:%S')}] CLI start-up {i + 1}/{runs}: {name} ...", file=sys.stderr, end="",
                  flush=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            try:
                r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                print(" timed out", file=sys.stderr)
                return {"error": f"{name} timed out after 600 s"}
            dt = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f" {dt:.2f} s", file=sys.stderr, flush=True)
            if r.returncode != 0:
                tail = (r.stderr.strip().splitlines() or ["no message"])[-1]
                return {"error": f"{name} exited with status {r.returncode}: {tail}"}
            wall[name].append(dt)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    out.unlink(missing_ok=True)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    h = parse_header(stream.read_bytes())
    return {"runs": runs, "width": h.width, "height": h.height, "bytes": stream.stat().st_size,
            "interpreter": sys.executable, "wall_s": wall, "cpu_s": cpu, "median_s": med, "cpu_median_s": cpu_med,
            "beyond_tf_s": med["decode_sh"] - med["import_tensorflow"],
            "cpu_beyond_tf_s": cpu_med["decode_sh"] - cpu_med["import_tensorflow"],
            "beyond_decoder_tf_s": med["decode_sh"] - med["import_tensorflow_as_decoder"],
            "cpu_beyond_decoder_tf_s": cpu_med["decode_sh"] - cpu_med["import_tensorflow_as_decoder"]}


def command_line() -> str:
    return "python -m evaluation.bench " + shlex.join(sys.argv[1:]) if sys.argv and "bench" in sys.argv[0] else \
        "python -m evaluation.bench (called as a library)"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / (1 << 20):.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = ""
    try:
        load = f", load average {os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs{mem}{load}, nice {os.nice(0)}"


@dataclass
class ReportData:
    """What the section writers read: the run's arguments and every result, keyed (size, codec, op)."""

    args: argparse.Namespace
    results: dict
    startup: dict
    anchors: list[str]
    cli: dict | None = None
    v3: dict | None = None

    @property
    def sizes(self) -> list[str]:
        return sorted({k[0] for k in self.results}, key=lambda s: [int(v) for v in s.split("x")][0] * 100000 +
                      int(s.split("x")[1]))

    def get(self, size: str, codec: str, op: str) -> dict | None:
        return self.results.get((size, codec, op))

    @property
    def anchor_header(self) -> list[str]:
        return [x for a in self.anchors for x in (a, f"ours/{a}")]


def report(args, registry, reg_desc, notes, results, startup, anchors, elapsed, cli: dict | None = None,
           v3: dict | None = None) -> str:
    """The printed report (table.txt): a header, then one section per table, then the goals."""
    d = ReportData(args, results, startup, anchors, cli, v3)
    L = header_section(args, reg_desc, notes, elapsed)
    for section in SECTIONS:
        L += section(d)
    return "\n".join(L)


def header_section(args, reg_desc: str, notes: list[str], elapsed: float) -> list[str]:
    return ["ratelock benchmark: " + command_line(),
            f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M')}; total {elapsed / 60:.1f} min",
            f"models: {reg_desc}",
            f"medians of {args.runs} run(s) per operation after a tiny warm-up (start-up excluded); each operation "
            f"in a fresh process{' (NO: --inprocess, peak RSS is not per operation)' if args.inprocess else ''}",
            *notes]


def encode_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        es, ef = d.get(s, "ours", "encode_search"), d.get(s, "ours", "encode_fixed")
        if not (es or ef) or s == f"{SIZE_8K[0]}x{SIZE_8K[1]}" and not es:
            continue
        row = [s, fs(_med(es)), spread(es), fs(_med(ef)), spread(ef), ratio(_med(es), _med(ef))]
        for a in d.anchors:
            ae = d.get(s, a, "encode")
            row += [fs(_med(ae)), ratio(_med(es), _med(ae))]
        row.append(f"{es.get('analyses', '-')}/{es.get('probes', '-')}" if _ok(es) else "-")
        rows.append(row)
    return ["\nENCODE, seconds (median); ours/anchor uses the rate-search encode",
            table(["size", "ours search", "min-max", "ours fixed", "min-max", "search/fixed", *d.anchor_header,
                   "analyses/probes"], rows)]


def refine_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        r, es = d.get(s, "ours", "encode_refine"), d.get(s, "ours", "encode_search")
        if not _ok(r):
            continue
        st = r.get("stages", {})
        rows.append([s, fs(_med(r)), ratio(_med(r), _med(es)), fs(st.get("refine")), fmib(_rss(r)),
                     fmib(_rss(es)), fs(r.get("refine_db"), 2), fs(r.get("bpp"), 4)])
    if not rows:
        return []
    return [f"\nREFINED ENCODE (rate search + {d.args.refine} latent-refinement steps per tile, one run): "
            "seconds, of which refining; peak RSS against the plain search; PSNR gain of the stream handed out",
            table(["size", "seconds", "x search", "refine s", "peak MiB", "search MiB", "gain dB", "bpp"], rows)]


def decode_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        r = d.get(s, "ours", "decode")
        if not r:
            continue
        row = [s, fs(_med(r)), spread(r), fs(r.get("first_s")) if _ok(r) else "-",
               fs(r["width"] * r["height"] / 1e6 / r["median_s"], 1) if _ok(r) else "-"]
        for a in d.anchors:
            ad = d.get(s, a, "decode")
            row += [fs(_med(ad)), ratio(_med(r), _med(ad))]
        rows.append(row)
    return ["\nDECODE, seconds (median; 'first' = first decode at this size in the process, after warm-up)",
            table(["size", "ours", "min-max", "ours first", "ours MP/s", *d.anchor_header], rows)]


def peak_rss_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        row = [s] + [fmib(_rss(d.get(s, "ours", o))) for o in ("encode_search", "encode_fixed", "decode")]
        for a in d.anchors:
            row += [fmib(_rss(d.get(s, a, "encode"))), fmib(_rss(d.get(s, a, "decode")))]
        r = d.get(s, "ours", "decode")
        row.append(fmib(r.get("rss_ready_mb")) if _ok(r) else "-")
        rows.append(row)
    return ["\nPEAK RSS, MiB (high-water mark of the operation's own process, VmHWM; for hevc the larger of "
            "the worker and its ffmpeg child, ru_maxrss of RUSAGE_CHILDREN); "
            "'dec ready' = decoder RSS after start-up, before decoding",
            table(["size", "ours enc search", "ours enc fixed", "ours dec",
                   *[x for a in d.anchors for x in (f"{a} enc", f"{a} dec")], "ours dec ready"], rows)]


def decode_memory_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        r = d.get(s, "ours", "decode")
        if not _ok(r) or not r.get("peak_rss_after_mb"):
            continue
        pa = r["peak_rss_after_mb"]
        rows.append([s, fmib(r.get("rss_ready_mb")), fmib(pa.get("parse")), fmib(pa.get("synthesis")),
                     fmib(pa.get("to_uint8")), fmib(r.get("peak_rss_mb")), _bytes_per_px(r)])
    return ["\nDECODE MEMORY, MiB: RSS when ready, then the process peak (VmHWM) after each stage of the "
            "first run; B/px = (peak - ready) / pixels",
            table(["size", "ready", "after parse", "after synthesis", "after to_uint8", "peak", "B/px"], rows)]


def _bytes_per_px(r: dict) -> str:
    return fs((r["peak_rss_mb"] - r["rss_ready_mb"]) * MIB / (r["width"] * r["height"]), 1)


def rate_section(d: ReportData) -> list[str]:
    args, rows = d.args, []
    for s in d.sizes:
        es = d.get(s, "ours", "encode_search") or d.get(s, "ours", "encode_fixed")
        row = [s, fs(es.get("bpp"), 4) if _ok(es) else "-",
               (f"{es.get('model')}/{es.get('delta_code')}" if _ok(es) else "-")]
        for a in d.anchors:
            ae = d.get(s, a, "encode")
            row += [fs(ae.get("bpp"), 4) if _ok(ae) else "-", f"{ae.get('knob'):g}" if _ok(ae) else "-"]
        ef = d.get(s, "ours", "encode_fixed")
        row.append({True: "yes", False: "NO"}.get(ef.get("same_stream_as_search"), "-") if _ok(ef) else "-")
        rows.append(row)
    return [f"\nRATE of the coded streams, bpp (ours: rate search at {args.target:g}; jpeg2000: requested "
            f"{args.target:g}; hevc: " + ("QP rate-matched to the target per image" if args.hevc_qp == "match"
                                          else f"QP {args.hevc_qp}") + ")",
            table(["size", "ours", "ours model/delta code", *[x for a in d.anchors for x in (a, f"{a} knob")],
                   "fixed == search stream"], rows)]


def decode_split_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        r = d.get(s, "ours", "decode")
        if not _ok(r):
            continue
        st = r["stages"]
        parse = st.get("parse")
        z, hs, y = st.get("parse.range_decode_z"), st.get("parse.hyper_synthesis_int"), st.get("parse.range_decode_y")
        rest = st.get("parse.rest")
        syn = st.get("synthesis")
        rows.append([s, fs(r["median_s"]), fs(parse), fs(z, 3), fs(hs, 3), fs(y, 3), fs(rest, 3),
                     fs(st.get("dequantize"), 3), fs(syn), fs(st.get("to_uint8"), 3), fs(st.get("other"), 3),
                     f"{100 * (parse or 0) / r['median_s']:.0f}/{100 * (syn or 0) / r['median_s']:.0f}"])
    return ["\nDECODE SPLIT, seconds (median per stage): parse = range decode z + integer hyper-synthesis + "
            "range decode y (+ header, CRC, scale index)",
            table(["size", "total", "parse", "range z", "int h_s", "range y", "parse rest", "dequant",
                   "synthesis", "to_uint8", "other", "% parse/synth"], rows)]


def synthesis_profile_section(d: ReportData) -> list[str]:
    out = []
    for s in d.sizes:
        p = d.get(s, "ours", "profile_synthesis")
        if not _ok(p):
            continue
        rows = [[l["name"], l["kind"], "x".join(str(v) for v in l["out_shape"]), fs(l["gmacs"]), fs(l["median_s"], 3),
                 fs(2 * l["gmacs"] / l["median_s"], 1) if l["median_s"] > 0 and l["gmacs"] else "-"]
                for l in p["layers"]]
        tot = sum(l["gmacs"] for l in p["layers"])
        rows.append(["total", "", "", fs(tot), fs(p["median_s"], 3), fs(2 * tot / p["median_s"], 1)])
        out.append(f"\nSYNTHESIS PROFILE at {s}, layer by layer (eager, whole image, median of {d.args.runs}; TF "
                   f"threads intra {p['threads']['intra']} / inter {p['threads']['inter']} (0 = all cores), oneDNN "
                   f"{p['onednn']})")
        out.append(table(["layer", "kind", "output", "GMAC", "seconds", "GFLOP/s"], rows))
    return out


def encode_split_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        for op in ("encode_search", "encode_fixed"):
            e = d.get(s, "ours", op)
            if not _ok(e):
                continue
            st = e["stages"]
            rows.append([s, op.replace("encode_", ""), fs(e["median_s"]), fs(st.get("analysis")),
                         fs(st.get("analysis.g_a")), fs(st.get("analysis.hyper_synthesis_int"), 3),
                         fs(st.get("code")), fs(st.get("range_encode")), fs(st.get("reconstruct")),
                         fs(st.get("other"), 3), f"{e.get('analyses')}/{e.get('probes')}"])
    return ["\nENCODE SPLIT, seconds (median per stage): analysis = g_a (tiled) + h_a + z coding + integer h_s, "
            "once per candidate model; code = quantise + range-code y, once per probe; reconstruct = synthesis "
            "to compare two in-band candidates",
            table(["size", "mode", "total", "analysis", "g_a", "int h_s", "code", "range enc", "reconstruct",
                   "other", "analyses/probes"], rows)]


def startup_section(d: ReportData) -> list[str]:
    rows = []
    for who, rs in d.startup.items():
        ok = [r for r in rs if _ok(r)]
        if not ok:
            if rs:
                rows.append([who, "ERROR: " + rs[0].get("error", "?")] + ["-"] * 9)
            continue

        def med(f, ok=ok):
            return statistics.median([f(r) for r in ok])
        interp = med(lambda r: r.get("interpreter_s", float("nan")))
        rows.append([who, fs(interp), fs(med(lambda r: r["imports"].get("numpy", 0))),
                     fs(med(lambda r: r["imports"].get("tensorflow", 0))),
                     fs(med(lambda r: r["imports"].get("tensorflow_compression", 0))),
                     fs(med(lambda r: r["imports"].get("codec", 0))),
                     fs(med(lambda r: r.get("load_s", r.get("init_s", 0)))),
                     fs(med(lambda r: r.get("trace_s", r.get("load_trace_s", 0)))),
                     fs(med(lambda r: r.get("startup_s", float("nan")))),
                     f"{len(ok[0]['models_loaded'])}/{ok[0].get('models_distinct')}",
                     fmib(med(lambda r: r.get("rss_ready_mb", float("nan"))))])
    return [f"\nSTART-UP, seconds (median of {d.args.runs} fresh processes): interpreter = spawn to worker main; "
            "load = registry + lazy model load (encoder: Encoder()); trace = first call on a tiny input "
            "(encoder: model load + trace of a 64x64 fixed encode)",
            table(["process", "interpreter", "numpy", "tensorflow", "tfc", "codec imports", "load", "trace",
                   "total to ready", "models loaded/distinct", "RSS ready MiB"], rows)]


def cli_section(d: ReportData) -> list[str]:
    cli = d.cli
    if not cli:
        return []
    if "error" in cli:
        return [f"\nCLI START-UP: ERROR: {cli['error']}"]
    rows = [[CLI_LABELS[k], fs(cli["median_s"][k]), f"{min(cli['wall_s'][k]):.2f}-{max(cli['wall_s'][k]):.2f}",
             fs(cli["cpu_median_s"][k])] for k in CLI_CALLS]
    rows.append(["decode.sh - import tensorflow", fs(cli["beyond_tf_s"]), "", fs(cli["cpu_beyond_tf_s"])])
    rows.append(["decode.sh - TF as the decoder imports it", fs(cli["beyond_decoder_tf_s"]), "",
                 fs(cli["cpu_beyond_decoder_tf_s"])])
    return [f"\nCLI START-UP, seconds (median of {cli['runs']} calls of each, interleaved, same interpreter): "
            f"a user's whole decode of the {cli['width']}x{cli['height']} stream ({cli['bytes']} bytes), start-up "
            "included, vs a bare TensorFlow import, and vs TensorFlow imported as the decoder does (without the "
            "JAX import TF makes when jax is installed); CPU = user + sys of the call",
            table(["call", "wall", "min-max", "CPU"], rows)]


# --------------------------------------------------------------------------- bitstream v3 vs v2 (issue 18)

def v3_ratios(dec: dict) -> dict[str, float]:
    """v3/v2 decode time per image (median of its runs), then the median over images; wall and CPU."""
    out = {}
    for kind in ("wall", "cpu"):
        per = [statistics.median(r["v3"][f"{kind}_s"]) / statistics.median(r["v2"][f"{kind}_s"])
               for r in dec["images"]]
        out[kind], out[f"{kind}_min"], out[f"{kind}_max"] = statistics.median(per), min(per), max(per)
    return out


def _v3_error(d: ReportData) -> str | None:
    """Why there is no v3 comparison to show, or None."""
    if "error" in d.v3:
        return d.v3["error"]
    dec = d.v3.get("decode")
    return None if _ok(dec) else (dec or {}).get("error", "not run")


def v3_decode_section(d: ReportData) -> list[str]:
    if d.v3 is None:
        return []
    why = _v3_error(d)
    if why:
        return [f"\nBITSTREAM V3 vs V2: ERROR: {why}"]
    dec, r = d.v3["decode"], v3_ratios(d.v3["decode"])
    rows = []
    for k in V3_LABELS:
        x = dec["labels"][k]
        rows.append([k, x["model"], str(x["version"]), fs(x["mean_bpp"], 4), fs(x["median_wall_s"]),
                     f"{x['min_wall_s']:.2f}-{x['max_wall_s']:.2f}", fs(x["median_cpu_s"]),
                     "-" if k == "v2" else f"{r['wall']:.2f}x ({r['wall_min']:.2f}-{r['wall_max']:.2f})",
                     "-" if k == "v2" else f"{r['cpu']:.2f}x ({r['cpu_min']:.2f}-{r['cpu_max']:.2f})"])
    return [f"\nBITSTREAM V3 vs V2, DECODE on Kodak, seconds: {len(dec['images'])} images, delta code "
            f"{d.v3['code']}, {d.args.runs} decode(s) of each image per model, interleaved in one process; "
            "median over images of each image's median; CPU = process time (all threads); v3/v2 = median over "
            "images of the per-image ratio (min-max). Models: " + d.v3["description"],
            table(["model", "name", "bitstream", "bpp", "wall", "min-max", "CPU", "v3/v2 wall", "v3/v2 CPU"], rows)]


def v3_split_section(d: ReportData) -> list[str]:
    if d.v3 is None or _v3_error(d):
        return []
    rows = []
    for k in V3_LABELS:
        st = d.v3["decode"]["labels"][k]["stages"]
        rows.append([k, fs(st.get("parse"), 3), fs(st.get("parse.range_decode_z"), 3),
                     fs(st.get("parse.hyper_synthesis_int"), 3), fs(st.get("parse.range_decode_y"), 3),
                     fs(st.get("parse.slice_loop"), 3), fs(st.get("parse.rest"), 3), fs(st.get("dequantize"), 3),
                     fs(st.get("synthesis"), 3), fs(st.get("to_uint8"), 3), fs(st.get("other"), 3)])
    return ["\nBITSTREAM V3 vs V2, DECODE SPLIT on Kodak, seconds (median per stage over all timed decodes): "
            "slice loop = v3's slice networks and range decoding of y, slice by slice",
            table(["model", "parse", "range z", "int h_s", "range y", "slice loop", "parse rest", "dequant",
                   "synthesis", "to_uint8", "other"], rows)]


def v3_complexity_section(d: ReportData) -> list[str]:
    if d.v3 is None or _v3_error(d):
        return []
    labels = d.v3["decode"]["labels"]
    base = labels["v2"]["kmac_per_pixel"]["total"]
    rows = []
    for k in V3_LABELS:
        m = labels[k]["kmac_per_pixel"]
        rows.append([k, fs(m["synthesis"]), fs(m["hyper_synthesis_int"]), fs(m["slice_nets"]), fs(m["total"]),
                     f"{100 * (m['total'] / base - 1):+.1f} %"])
    return ["\nDECODER COMPLEXITY, kMAC/pixel (multiply-accumulates per image pixel, thousands): synthesis g_s "
            "+ integer hyper-synthesis + v3 slice networks; range coding and element-wise work not counted",
            table(["model", "synthesis", "int h_s", "slice nets", "total", "vs v2"], rows)]


def v3_8k_section(d: ReportData) -> list[str]:
    if d.v3 is None or not d.v3.get("8k"):
        return []
    rows = []
    for k in V3_LABELS:
        r = (d.v3["8k"].get(k) or {}).get("decode")
        if not _ok(r):
            rows.append([k, "ERROR: " + (r or {}).get("error", "not run")] + ["-"] * 10)
            continue
        pa, rb = r.get("peak_rss_after_mb", {}), r.get("rss_before_mb", {})
        y = "parse.slice_loop" if "parse.slice_loop" in pa else "parse.range_decode_y"
        own = pa[y] - rb[y] if y in pa and y in rb and pa[y] > pa.get("parse.hyper_synthesis_int", 0) else None
        enc = d.v3["8k"][k].get("encode") or {}
        rows.append([k, fs(enc.get("bpp"), 4) if _ok(enc) else "-", fs(r["median_s"], 1), fmib(r.get("rss_ready_mb")),
                     fmib(pa.get("parse.hyper_synthesis_int")), fmib(rb.get(y)), fmib(pa.get(y)), fmib(own),
                     fmib(pa.get("synthesis")), fmib(pa.get("to_uint8")), fmib(_rss(r)), _bytes_per_px(r)])
    return [f"\nBITSTREAM V3 vs V2 at {SIZE_8K[0]}x{SIZE_8K[1]}: decode seconds and memory, MiB (each decode in a "
            "fresh process; 'after' = process peak (VmHWM) after the stage; 'y' = v3's slice loop, v2's range "
            "decoding of y; 'y own' = its peak minus the RSS when it began, shown when it raised the peak)",
            table(["model", "bpp", "decode s", "ready", "after int h_s", "y start RSS", "after y", "y own",
                   "after synthesis", "after to_uint8", "peak", "B/px"], rows)]


# --------------------------------------------------------------------------- goals

def _mark(ok: bool) -> str:
    return "goal met" if ok else "NOT MET"


def goal_decode_768(d: ReportData) -> list[str]:
    r = d.get("768x512", "ours", "decode")
    if not _ok(r):
        return ["[not measured] decode 768x512 <= 1.0 s: no 768x512 decode in this run"
                + (f" ({r['error']})" if r else "")]
    st = r["stages"]
    return [f"[{_mark(r['median_s'] <= GOAL_DECODE_S)}] decode 768x512 <= {GOAL_DECODE_S:.1f} s (start-up "
            f"excluded): {r['median_s']:.2f} s median (first {r['first_s']:.2f} s); parse "
            f"{st.get('parse', 0):.2f} s, synthesis {st.get('synthesis', 0):.2f} s"]


def goal_search_ratio(d: ReportData) -> list[str]:
    ratios = []
    for (s, c, o), es in d.results.items():
        if c == "ours" and o == "encode_search":
            ef = d.get(s, "ours", "encode_fixed")
            if _ok(es) and _ok(ef):
                ratios.append((s, es["median_s"] / ef["median_s"], es["median_s"], ef["median_s"],
                               es.get("analyses"), es.get("probes")))
    if not ratios:
        return ["[not measured] rate-search vs fixed encode"]
    ok = all(r[1] <= GOAL_SEARCH_RATIO for r in ratios)
    detail = "; ".join(f"{s}: {r:.2f}x ({a:.2f} / {b:.2f} s, {n} analyses, {p} probes)"
                       for s, r, a, b, n, p in ratios)
    return [f"[{_mark(ok)}] encode with rate search <= {GOAL_SEARCH_RATIO:.0f}x fixed-step encode: {detail}"]


def goal_rss_4k(d: ReportData) -> list[str]:
    r4 = {o: d.get("3840x2160", "ours", o) for o in ("encode_search", "encode_fixed", "decode")}
    if not all(_ok(r) for r in r4.values()):
        return ["[not measured] 3840x2160 peak RSS <= 4 GB (size not in --sizes or a run failed)"]
    peaks = {o: _rss(r) * MIB for o, r in r4.items()}
    isolated = all(r.get("rss_isolated") for r in r4.values())
    ok = all(v <= GOAL_RSS_BYTES for v in peaks.values()) and isolated
    return [f"[{_mark(ok)}] 3840x2160 peak RSS <= 4 GB: " + ", ".join(f"{o} {v / 1e9:.2f} GB" for o, v in peaks.items())
            + ("" if isolated else " (not isolated: --inprocess)")]


def goal_8k(d: ReportData) -> list[str]:
    d8 = d.get(f"{SIZE_8K[0]}x{SIZE_8K[1]}", "ours", "decode")
    if d8 is None:
        return ["[not measured] 7680x4320 decodes without running out of memory (use --include-8k)"]
    if not _ok(d8):
        return [f"[NOT MET] 7680x4320 decode failed: {d8['error']}"]
    return [f"[goal met] 7680x4320 decodes without running out of memory: {d8['median_s']:.1f} s, peak RSS "
            f"{_rss(d8) / 1024:.2f} GiB ({_rss(d8) * MIB / 1e9:.2f} GB)"]


def goal_startup(d: ReportData) -> list[str]:
    dec = [r for r in d.startup.get("decoder", []) if _ok(r)]
    if dec and not dec[0].get("rss_isolated"):
        return ["[not measured] start-up / lazy loading: needs fresh processes (not --inprocess)"]
    if not dec:
        return ["[not measured] start-up / lazy loading"]
    r = dec[0]
    loaded, distinct = len(r["models_loaded"]), r.get("models_distinct")
    extra = r.get("encoder_side_modules", [])
    ok = loaded == 1 and not extra
    t = statistics.median([x.get("startup_s", float("nan")) for x in dec])
    imp = statistics.median([x.get("import_s", float("nan")) for x in dec])
    ld = statistics.median([x.get("load_s", float("nan")) for x in dec])
    unneeded = r.get("unneeded_modules", [])
    return [f"[{_mark(ok and not unneeded)}] start-up loads only the model the stream needs: decoder loaded "
            f"{loaded} of {distinct} distinct model(s), encoder-side modules imported: "
            f"{', '.join(extra) or 'none'}, packages it does not need: {', '.join(unneeded) or 'none'}; "
            f"start-up {t:.1f} s median (imports {imp:.1f} s, model load {ld:.2f} s)"]


def goal_cli(d: ReportData) -> list[str]:
    cli = d.cli
    goal = f"whole decoder/decode.sh call <= bare `import tensorflow` + {GOAL_CLI_BEYOND_TF_S:.1f} s"
    if cli is None:
        return [f"[not measured] {goal} ({'--inprocess' if d.args.inprocess else '--cli-runs 0, or no stream'})"]
    if "error" in cli:
        return [f"[NOT MET] {goal}: {cli['error']}"]
    m = cli["median_s"]
    return [f"[{_mark(cli['beyond_tf_s'] <= GOAL_CLI_BEYOND_TF_S)}] {goal}: {m['decode_sh']:.2f} s vs "
            f"{m['import_tensorflow']:.2f} s, {cli['beyond_tf_s']:+.2f} s (CPU {cli['cpu_beyond_tf_s']:+.2f} s), "
            f"median of {cli['runs']}, {cli['width']}x{cli['height']}; beyond TF imported as the decoder does "
            f"(no JAX): {cli['beyond_decoder_tf_s']:+.2f} s (CPU {cli['cpu_beyond_decoder_tf_s']:+.2f} s)"]


def goal_v3(d: ReportData) -> list[str]:
    """Only with --v3: the slice loop's decode cost on Kodak (issue 18's bound) and the 8K decode."""
    if d.v3 is None:
        return []
    goal = f"bitstream v3 decode <= {GOAL_V3_RATIO:.1f}x v2 on CPU (Kodak)"
    why = _v3_error(d)
    if why:
        return [f"[NOT MET] {goal}: {why}"]
    dec, r = d.v3["decode"], v3_ratios(d.v3["decode"])
    lab = dec["labels"]
    km = {k: lab[k]["kmac_per_pixel"]["total"] for k in V3_LABELS}
    out = [f"[{_mark(max(r['wall'], r['cpu']) <= GOAL_V3_RATIO)}] {goal}: wall {r['wall']:.2f}x, CPU time "
           f"{r['cpu']:.2f}x (median over {len(dec['images'])} images of the per-image ratio; v2 "
           f"{lab['v2']['median_wall_s']:.2f} s, v3 {lab['v3']['median_wall_s']:.2f} s wall median); "
           f"{km['v2']:.1f} -> {km['v3']:.1f} kMAC/pixel"]
    k8 = d.v3.get("8k")
    if not k8:
        out.append(f"[not measured] {SIZE_8K[0]}x{SIZE_8K[1]} v3 decode memory (use --include-8k)")
        return out
    r2, r3 = (k8.get(k, {}).get("decode") for k in V3_LABELS)
    if not _ok(r3):
        out.append(f"[NOT MET] {SIZE_8K[0]}x{SIZE_8K[1]} v3 decode failed: {(r3 or {}).get('error', 'not run')}")
    else:
        v2 = f"{_rss(r2) / 1024:.2f} GiB, {r2['median_s']:.1f} s" if _ok(r2) else "failed"
        out.append(f"[goal met] {SIZE_8K[0]}x{SIZE_8K[1]} v3 decodes without running out of memory: "
                   f"{r3['median_s']:.1f} s, peak RSS {_rss(r3) / 1024:.2f} GiB (v2 on the same image: {v2})")
    return out


GOALS = (goal_decode_768, goal_search_ratio, goal_rss_4k, goal_8k, goal_startup, goal_cli, goal_v3)


def goals_section(d: ReportData) -> list[str]:
    return ["\nGOALS"] + [line for goal in GOALS for line in goal(d)]


SECTIONS = (encode_section, refine_section, decode_section, peak_rss_section, decode_memory_section, rate_section,
            decode_split_section, synthesis_profile_section, encode_split_section, startup_section, cli_section,
            v3_decode_section, v3_split_section, v3_complexity_section, v3_8k_section, goals_section)


CSV_FIELDS = ["size", "codec", "op", "runs", "median_s", "min_s", "max_s", "first_s", "times", "mpix_per_s", "bytes",
              "bpp", "peak_rss_mib", "rss_ready_mib", "rss_isolated", "startup_s", "interpreter_s", "import_s",
              "load_s", "trace_s", "init_s", "load_trace_s", "models_loaded", "models_distinct", "model", "delta_code",
              "analyses", "probes", "same_stream_as_search", "knob", "refine_db", "error"]


def _row(size: str, codec: str, op: str, r: dict) -> dict:
    row = {"size": size, "codec": codec, "op": op, "error": r.get("error", "")}
    if _ok(r):
        row.update({k: r.get(k, "") for k in ("median_s", "min_s", "max_s", "first_s", "bytes", "bpp", "startup_s",
                                              "interpreter_s", "import_s", "load_s", "trace_s", "init_s",
                                              "load_trace_s", "models_distinct", "model", "delta_code", "analyses",
                                              "probes", "same_stream_as_search", "knob", "rss_isolated")})
        row["runs"] = len(r.get("times", []))
        row["times"] = ";".join(f"{t:.4f}" for t in r.get("times", []))
        if r.get("width") and r.get("median_s"):
            row["mpix_per_s"] = r["width"] * r["height"] / 1e6 / r["median_s"]
        row["peak_rss_mib"] = _rss(r)
        row["rss_ready_mib"] = r.get("rss_ready_mb", "")
        row["models_loaded"] = len(r.get("models_loaded", []))
        for k, v in r.get("stages", {}).items():
            row[f"stage_{k}_s"] = v
        for k, v in r.get("imports", {}).items():
            row[f"import_{k}_s"] = v
    return row


def write_csv(path: Path, results: dict, startup: dict, cli: dict | None = None, v3: dict | None = None) -> None:
    rows = [_row(*k, r) for k, r in results.items()]
    if v3 and _ok(v3.get("decode")):
        for k, x in v3["decode"]["labels"].items():
            rows.append({"size": "kodak", "codec": f"ours_{k}", "op": "decode_kodak", "runs": len(
                v3["decode"]["images"]), "median_s": x["median_wall_s"], "min_s": x["min_wall_s"],
                "max_s": x["max_wall_s"], "cpu_median_s": x["median_cpu_s"], "bpp": x["mean_bpp"], "model": x["model"],
                "delta_code": v3["code"], **{f"kmac_{n}": v for n, v in x["kmac_per_pixel"].items()},
                **{f"stage_{n}_s": v for n, v in x["stages"].items()}, "error": ""})
    for k, ops in ((v3 or {}).get("8k") or {}).items():
        rows += [_row(f"{SIZE_8K[0]}x{SIZE_8K[1]}", f"ours_{k}", op, r) for op, r in ops.items()]
    for who, rs in startup.items():
        rows += [_row("-", "ours", f"startup_{who}", r) for r in rs]
    if cli and "error" not in cli:
        for k in CLI_CALLS:
            rows.append({"size": f"{cli['width']}x{cli['height']}", "codec": "ours", "op": f"cli_{k}",
                         "runs": cli["runs"], "median_s": cli["median_s"][k], "min_s": min(cli["wall_s"][k]),
                         "max_s": max(cli["wall_s"][k]), "times": ";".join(f"{t:.4f}" for t in cli["wall_s"][k]),
                         "cpu_median_s": cli["cpu_median_s"][k], "error": ""})
    elif cli:
        rows.append({"size": "-", "codec": "ours", "op": "cli_decode_sh", "error": cli["error"]})
    extra = sorted({k for r in rows for k in r} - set(CSV_FIELDS))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS + extra, restval="")
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        return run_bench(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
