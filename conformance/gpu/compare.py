"""The GPU parity verdict: the device's decodes against the TF CPU decoder, here.

  python -m conformance.gpu.compare --pack gpu-pack --returned DIR [--md conformance/GPU_PARITY.md]

DIR is what `python -m conformance.gpu.run` wrote into $OUT on the device (searched recursively).
Per stream: the parse here (TF, CPU) against the symbol hash in the pack; whether the device
synthesised from the very integers and y_hat the pack carries (its own hash checks); max |diff|
and PSNR between the GPU and CPU decodes; CPU and GPU seconds for dequantise + synthesis +
rounding (the parse is CPU-only in this setup and is timed here on its own). Prints a markdown
report and writes it to --md (and --json); exit 0 only if every stream is identical in symbols,
came back, and is within --max-diff levels.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from conformance.common import psnr  # noqa: E402 - evaluation.metrics's PSNR (cap inf: identical reads as such)
from conformance.gpu import format as F  # noqa: E402
from models.cli import ArgumentParser, one_line_errors  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROG = "python -m conformance.gpu.compare"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default=str(ROOT / "gpu-pack"))
    p.add_argument("--returned", required=True, help="the folder that came back from the device (what gpu.run wrote)")
    p.add_argument("--md", default=str(ROOT / "conformance" / "GPU_PARITY.md"), help="markdown report to write")
    p.add_argument("--json", default=None, help="also write the per-stream figures as JSON")
    p.add_argument("--registry", default=None)
    p.add_argument("--max-diff", type=int, default=1, help="pass bar on max |diff| in levels (default 1)")
    p.add_argument("--threads", type=int, default=0, help="TF threads for the CPU reference (0 = default)")
    return p.parse_args(argv)


def _fmt_db(v: float | None) -> str:
    return "-" if v is None else ("∞ (identical)" if math.isinf(v) else f"{v:.2f}")


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f} s" if v >= 1 else f"{v * 1000:.1f} ms")


def compare(args: argparse.Namespace) -> tuple[list[dict], dict, str]:
    manifest = F.load_manifest(args.pack)
    rep = F.find_report(args.returned)
    decodes = F.read_decodes(args.returned)
    from decoder import decode as D
    from models.runtime import configure
    configure(args.threads)
    models = D.ModelCache(args.registry)
    gpu = {r["name"]: r for r in rep.get("streams", [])}
    rows = []
    for s in manifest["streams"]:
        data = (Path(args.pack) / s["stream"]).read_bytes()
        row = {"name": s["name"], "kind": s["kind"], "size": f"{s['width']}x{s['height']}",
               "model": s["model_name"], "bpp": round(s["bpp"], 4)}
        t0 = time.perf_counter()
        parsed = D.parse(data, models)
        row["cpu_parse_s"] = time.perf_counter() - t0
        row["symbols_identical"] = parsed.symbol_hash() == s["symbol_hash"]
        model = models.get(parsed.header)
        t0 = time.perf_counter()
        cpu = D.to_uint8(D.synthesize(model.synthesis, D.dequantize(parsed)), s["width"], s["height"])
        row["cpu_s"] = time.perf_counter() - t0
        g = gpu.get(s["name"], {})
        row["device_inputs_verified"] = bool(g.get("payload_ok") and g.get("y_hat_ok"))
        row["gpu_s"] = g.get("decode_s")
        row["error"] = g.get("error") or g.get("note") or ("" if s["name"] in gpu else "not run on the device")
        img = decodes.get(s["name"])
        if img is None or img.shape != cpu.shape:
            row.update(max_diff=None, psnr=None, differing=None)
            row["error"] = row["error"] or ("decode not returned" if img is None else f"shape {img.shape}")
        else:
            d = np.abs(img.astype(np.int16) - cpu.astype(np.int16))
            row.update(max_diff=int(d.max()), psnr=psnr(img, cpu), differing=float((d > 0).mean()))
        row["pass"] = bool(row["symbols_identical"] and row["device_inputs_verified"] and row["max_diff"] is not None
                           and row["max_diff"] <= args.max_diff)
        rows.append(row)
        print(f"  {row['name']}: max |diff| {row['max_diff']}, CPU {row['cpu_s']:.3f} s, GPU {row['gpu_s']} s"
              f"{'  ' + row['error'] if row['error'] else ''}", flush=True)
    return rows, rep, markdown(rows, rep, args.max_diff)


def _timing(rows: list[dict], kind: str) -> tuple[float | None, float | None, int]:
    pairs = [(r["cpu_s"], r["gpu_s"]) for r in rows if r["kind"] == kind and r["gpu_s"]]
    if not pairs:
        return None, None, 0
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs), len(pairs)


def summary(rows: list[dict], rep: dict, max_diff: int) -> str:
    n = len(rows)
    same = sum(r["symbols_identical"] for r in rows)
    ver = sum(r["device_inputs_verified"] for r in rows)
    diffs = [r["max_diff"] for r in rows if r["max_diff"] is not None]
    ps = [r["psnr"] for r in rows if r["psnr"] is not None]
    worst = max(diffs) if diffs else None
    verdict = "PASS" if all(r["pass"] for r in rows) and n else "FAIL"
    return (f"{verdict}: {n} streams on {rep.get('device', '?')} ({rep.get('platform', '?')}, jax {rep.get('jax', '?')}, "
            f"matmul precision {rep.get('matmul_precision', '?')}): symbols identical {same}/{n} (CPU parse vs the "
            f"pack; not parsed on the device), device inputs verified {ver}/{n}, returned {len(diffs)}/{n}, "
            f"max |diff| {worst} (bar {max_diff}), min PSNR GPU vs CPU {_fmt_db(min(ps)) if ps else '-'} dB")


def markdown(rows: list[dict], rep: dict, max_diff: int) -> str:
    lines = ["# GPU parity, measured", "",
             f"Written by `{PROG}` from a `conformance.gpu.run` on **{rep.get('device', '?')}** "
             f"({rep.get('platform', '?')}; jax {rep.get('jax', '?')}, Python {rep.get('python', '?')}, numpy "
             f"{rep.get('numpy', '?')}; matmul precision `{rep.get('matmul_precision', '?')}`, "
             f"NVIDIA_TF32_OVERRIDE={rep.get('tf32_override', '?')}; peak device memory "
             f"{rep.get('peak_bytes', 0) / F.MiB:.0f} MiB; run {'finished' if rep.get('finished') else 'CUT SHORT'}), "
             f"pack built at git {rep.get('pack_git', '?')}.", "",
             "**How**: the device has no TensorFlow, so the range decoder (a TF custom op) did not run there: "
             "the streams were parsed here on the CPU, and the device synthesised (JAX, fp32) from the carried "
             "integers after checking their hash and the hash of the rebuilt y_hat. *Symbols identical* compares "
             "this machine's parse with the pack's: it proves the pack is the stream, not that a GPU parses alike "
             "(the parse is integer-only by design, decoder/BITSTREAM.md).", "",
             f"**{summary(rows, rep, max_diff)}**", "",
             "| kind | median CPU | median GPU | speed-up | streams |", "|---|---|---|---|---|"]
    for kind, label in (("golden", "golden crops"), ("kodak", "Kodak 768x512"), ("big", "4K (timing image)")):
        c, g, k = _timing(rows, kind)
        if k:
            lines.append(f"| {label} | {_fmt_s(c)} | {_fmt_s(g)} | {c / g:.1f}x | {k} |")
    lines += ["", "Seconds are dequantise + synthesis + rounding to uint8 (the CPU row: TF 2.14 on this machine's "
              "cores, shared; the GPU row: the fastest of the timed runs after a compile run).", "",
              "| stream | size | model | bpp | symbols identical | device inputs verified | max abs diff | "
              "differing px | PSNR GPU vs CPU (dB) | CPU | GPU | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "-" if r["differing"] is None else f"{r['differing'] * 100:.3f} %"
        md = "-" if r["max_diff"] is None else r["max_diff"]
        yes = {True: "yes", False: "NO"}
        lines.append(f"| {r['name']} | {r['size']} | {r['model']} | {r['bpp']} | {yes[r['symbols_identical']]} "
                     f"| {yes[r['device_inputs_verified']]} | {md} | {diff} | {_fmt_db(r['psnr'])} "
                     f"| {_fmt_s(r['cpu_s'])} | {_fmt_s(r['gpu_s'])} | {r['error']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    return one_line_errors(PROG, lambda: _main(args), status=2)


def _main(args) -> int:
    if not Path(args.returned).is_dir():
        raise FileNotFoundError(f"{args.returned}: no such folder")
    rows, rep, md = compare(args)
    print(md)
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": rep, "rows": rows}, indent=1, default=str))
    print(summary(rows, rep, args.max_diff))
    return 0 if rows and all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
