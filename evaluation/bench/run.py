"""The bench's main flow and command line (`python -m evaluation.bench`; evaluation/BENCH.md)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from evaluation.bench.plan import (
    ANCHORS,
    SIZE_8K,
    Runner,
    describe_registry,
    make_image,
    parse_args,
    resolve_registry,
)
from evaluation.bench.probes import cli_startup
from evaluation.bench.report import command_line, report
from evaluation.bench.tables import _ok, write_csv
from evaluation.bench.v3 import run_v3
from models.cli import one_line_errors

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

def main(argv: list[str] | None = None) -> int:
    """Bad arguments, a BenchError or any other failure: one line on stderr, exit 2."""
    return one_line_errors("bench", lambda: run_bench(parse_args(argv)), status=2)
