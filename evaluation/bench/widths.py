"""Decode time and peak memory of several models on the same images, each decode in a fresh process.

    python -m evaluation.bench.widths --registry A.yaml --registry B.yaml --sizes 768x512,3840x2160,7680x4320

Why beside the main bench: comparing two networks (a wider one against the shipped one, docs/findings.md
"Wider transforms") needs one stream per (model, size) and its decodes, not the rate search, the anchors or
the start-up figures. Each stream is one fixed encode with the registry's model for --target at
--delta-code (untimed, in a worker of its own); each decode runs `--runs` times in a fresh
`python -m evaluation.bench.worker` (one timed run at sizes over 4 MP, where one decode is minutes here), so
its time (wall, and CPU over all threads), peak RSS (VmHWM) and stage split are its own. The images are
the main bench's Kodak mosaics.
Sizes run in order and, within a size, the registries in turn, so both see the same load.
`--images DIR` instead codes each PNG of DIR with each model (untimed): bytes and PSNR-RGB side by side.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from evaluation.bench.plan import BenchError, Runner, make_image, parse_size
from evaluation.bench.tables import table
from evaluation.datasets import KODAK
from models.cli import ArgumentParser, one_line_errors

PROG = "python -m evaluation.bench.widths"
LARGE_PX = 4_000_000          # above this, one timed decode


def _widths(registry: str, target: float) -> tuple[str, int, int, int]:
    """(model name, N, M, target index) of the registry's model for `target`."""
    import numpy as np

    from models.targets import TARGETS
    from models.weights import load_registry
    ti = TARGETS.index(target)
    entry = load_registry(registry).by_target(ti)
    with np.load(entry.dec_path) as f:
        w = json.loads(str(f["meta"]))["widths"]
    return entry.name, int(w["num_filters"]), int(w["latent_channels"]), ti


def _kmac(registry: str, target_index: int) -> float:
    """The decoder's kMAC per pixel (g_s and the integer h_s), counted from the loaded model: load-independent."""
    from evaluation.bench.ops import decoder_kmac_per_pixel
    from models.weights import ModelStore
    store = ModelStore(registry)
    return decoder_kmac_per_pixel(store.decoder_model(store.registry.by_target(target_index)))["total"]


def run(args) -> int:
    import numpy as np
    models = [(reg, *_widths(reg, args.target)) for reg in args.registry]
    kmac = [_kmac(reg, ti) for reg, *_, ti in models]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ratelock_widths_") as tmp:
        work = Path(tmp)
        runner = Runner(work, inprocess=False, timeout=args.timeout)
        for w, h in args.size_list:
            img = work / f"{w}x{h}.npy"
            np.save(img, make_image(w, h, Path(args.kodak), "kodim23.png"))
            runs = 1 if w * h > LARGE_PX else args.runs
            for k, (reg, name, n, m, ti) in enumerate(models):
                stream = work / f"{w}x{h}.{k}.rlk"
                enc = runner(f"{w}x{h} {name} encode", {"op": "encode_fixed", "registry": reg, "image": str(img),
                                                         "runs": 1, "target_index": ti, "delta_code": args.delta_code,
                                                         "stream_out": str(stream)})
                if "error" in enc:
                    raise BenchError(f"encode of {w}x{h} with {name} failed: {enc['error']}")
                load = os.getloadavg()[0]
                dec = runner(f"{w}x{h} {name} decode x{runs}", {"op": "decode", "registry": reg, "stream": str(stream),
                                                                 "runs": runs, "threads": args.threads})
                if "error" in dec:
                    raise BenchError(f"decode of {w}x{h} with {name} failed: {dec['error']}")
                st = dec["stages"]
                peak, ready = dec["peak_rss_mb"], dec["rss_ready_mb"]
                rows.append([f"{w}x{h}", name, str(n), str(m), f"{kmac[k]:.0f}", f"{8 * dec['bytes'] / (w * h):.4f}",
                             f"{dec['median_s']:.2f}", f"{dec['min_s']:.2f}-{dec['max_s']:.2f}", str(runs),
                             f"{dec['cpu_median_s']:.2f}",
                             f"{st.get('parse.hyper_synthesis_int', 0):.2f}", f"{st.get('parse', 0):.2f}",
                             f"{st.get('synthesis', 0):.2f}", f"{ready:.0f}", f"{peak:.0f}",
                             f"{(peak - ready) * (1 << 20) / (w * h):.1f}"])
                results.append({"size": f"{w}x{h}", "registry": reg, "model": name, "num_filters": n,
                                "latent_channels": m, "load_average": load, "encode": enc, "decode": dec})
            img.unlink()
    head = ["size", "model", "N", "M", "kMAC/px", "bpp", "decode s", "min-max", "runs", "CPU s", "int h_s s", "parse s",
            "synthesis s", "ready MiB", "peak MiB", "B/px"]
    loads = [r["load_average"] for r in results]
    text = (f"{PROG} {' '.join(args.argv)}\n{time.strftime('%Y-%m-%d %H:%M')}, total {(time.time() - t0) / 60:.1f} min, "
            f"streams: fixed encode at delta code {args.delta_code} with each registry's model for {args.target:g} "
            f"bpp; decode medians, each (model, size) in a fresh process\n" + table(head, rows) + "\n")
    if loads:
        text += f"load average before the decodes: median {statistics.median(loads):.2f}, {min(loads):.2f}-{max(loads):.2f}\n"
    (out / "table.txt").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(text)
    return 0


def compare_images(args) -> int:
    """--images: each PNG coded with each registry's model at one delta code, in this process (no timing):
    bytes and PSNR-RGB per model, and how many images decode to exactly the first registry's output (the
    streams' headers name their model, so the bytes always differ)."""
    import numpy as np

    from decoder.api import decode_bytes
    from encoder.api import Encoder
    from encoder.imageio import load_rgb8
    from evaluation.metrics import psnr_rgb
    models = [(reg, *_widths(reg, args.target)) for reg in args.registry]
    encoders = [Encoder(reg) for reg, *_ in models]
    index = [next(i for i, e in enumerate(enc.models.distinct_entries()) if e.target_index == ti)
             for enc, (*_, ti) in zip(encoders, models)]
    rows, same = [], [0] * len(models)
    for f in sorted(Path(args.images).glob("*.png")):
        rgb = load_rgb8(f)
        row, first = [f.name], None
        for k, ((reg, *_), enc, mi) in enumerate(zip(models, encoders, index)):
            data = bytes(enc.encode_fixed(rgb, mi, args.delta_code))
            out = decode_bytes(data, reg)
            first = (len(data), out) if first is None else first
            same[k] += bool(np.array_equal(out, first[1]))
            row += [f"{8 * len(data) / (rgb.shape[0] * rgb.shape[1]):.4f}", f"{psnr_rgb(rgb, out):.3f}",
                    f"{len(data) - first[0]:+d}"]
        rows.append(row)
    head = ["image"] + [f"{c} {name}" for _, name, *_ in models for c in ("bpp", "PSNR", "bytes vs first")]
    identical = ", ".join(f"{name} (N={n} M={m}) {k}/{len(rows)}" for (_, name, n, m, _), k in zip(models, same))
    text = (f"{PROG} {' '.join(args.argv)}\n{time.strftime('%Y-%m-%d %H:%M')}, fixed encode at delta code "
            f"{args.delta_code}; decoded exactly as with the first model: {identical}\n" + table(head, rows) + "\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "images.txt").write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", action="append", required=True, help="a model registry; repeat to compare")
    p.add_argument("--sizes", default="768x512,3840x2160,7680x4320", help="comma list of WxH")
    p.add_argument("--runs", type=int, default=3, help="timed decodes per (model, size) up to 4 MP (default 3)")
    p.add_argument("--target", type=float, default=2.0, help="whose model: the registry's entry for this target")
    p.add_argument("--delta-code", type=int, default=128, help="delta code of the streams (default 128: delta 1)")
    p.add_argument("--kodak", default=str(KODAK), help="Kodak folder (the mosaics' tiles)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads in the decode workers (0 = default)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    p.add_argument("--images", default="", help="instead: code each PNG here with each model at --delta-code and "
                   "report bytes and PSNR-RGB, untimed (images.txt)")
    p.add_argument("--out", default="runs/bench_widths", help="table.txt and results.json (or images.txt) go here")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    args.argv = argv

    def body() -> int:
        args.size_list = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        if args.runs < 1:
            raise BenchError("--runs must be >= 1")
        return compare_images(args) if args.images else run(args)
    return one_line_errors(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
