"""The encoder's refinement in float32 against bfloat16 convolutions: refine-stage seconds and gain.

    python -m evaluation.bench.refine_dtype ../shared/data/kodak --images kodim01,kodim07,kodim23 \
        --targets 0.25,1.0

Each image and target is encoded with the shipped rate search and 100 refinement steps once per
dtype, in one process (one Encoder per dtype, warmed on a small image first), and the table gives the
refine stage's wall seconds, the PSNR gain of the stream handed out and the gain counting the rate
(rate_control.search.Refinement). Pause other work on the machine while it runs: the seconds are
wall clock. Where the CPU has no native bf16 the bf16 column is emulated and is expected to be slower.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import numpy as np

from models.cli import ArgumentParser, non_negative_int, one_line_errors

DTYPES = ("float32", "bfloat16")


class _RefineTimer:
    """A models.stages.Stages that adds up the "refine" stage's wall seconds."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            if name == "refine":
                self.seconds += time.perf_counter() - t


def run(images: list[Path], targets: list[float], iters: int) -> list[dict]:
    """One row per image, target and dtype."""
    from PIL import Image

    from encoder.api import Encoder
    from models.cpu import model
    rows, encoders = [], {}
    for dtype in DTYPES:
        enc = Encoder(None, refine=iters, refine_dtype=dtype)
        enc.encode(np.asarray(Image.open(images[0]).convert("RGB"))[:128, :128].copy(), targets[0])   # warm up
        encoders[dtype] = enc
    print(f"CPU: {model()}", flush=True)
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for target in targets:
            for dtype in DTYPES:
                enc, timer = encoders[dtype], _RefineTimer()
                enc.models.stages = timer
                c = enc.encode(rgb, target)
                r = c.refinement
                rows.append({"image": path.stem, "target": target, "dtype": dtype, "refine_s": timer.seconds,
                             "bpp": c.bpp, "gain_db": r.gain_db if r else 0.0,
                             "equivalent_db": r.equivalent_db if r else 0.0})
                print(f"{path.stem} {target:.2f} {dtype:9s} refine {timer.seconds:6.1f} s  bpp {c.bpp:.4f}  "
                      f"gain {rows[-1]['gain_db']:+.3f} dB  (counting rate {rows[-1]['equivalent_db']:+.3f})",
                      flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    """Means per dtype, and bf16's speed-up and paired gain difference."""
    by = {d: [r for r in rows if r["dtype"] == d] for d in DTYPES}
    f32, b16 = by["float32"], by["bfloat16"]
    lines = ["| dtype | mean refine s | mean gain dB | mean gain counting rate dB |", "|---|---|---|---|"]
    for d in DTYPES:
        lines.append(f"| {d} | {statistics.mean(r['refine_s'] for r in by[d]):.1f} | "
                     f"{statistics.mean(r['gain_db'] for r in by[d]):.4f} | "
                     f"{statistics.mean(r['equivalent_db'] for r in by[d]):.4f} |")
    diff = [b["equivalent_db"] - f["equivalent_db"] for f, b in zip(f32, b16)]
    se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
    speed = sum(r["refine_s"] for r in f32) / sum(r["refine_s"] for r in b16)
    lines.append(f"\nbf16 refine stage {speed:.2f}x float32; gain counting rate, bf16 minus float32: "
                 f"{statistics.mean(diff):+.4f} dB (SE {se:.4f}, {len(diff)} pairs)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m evaluation.bench.refine_dtype", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images_dir", help="folder of PNG images (Kodak)")
    p.add_argument("--images", default="kodim01,kodim07,kodim23", help="comma list of image names (no suffix)")
    p.add_argument("--targets", default="0.25,1.0", help="comma list of target bpp")
    p.add_argument("--iters", type=non_negative_int, default=100, help="refinement steps per tile")
    args = p.parse_args(argv)

    def body() -> int:
        images = [Path(args.images_dir) / f"{n}.png" for n in args.images.split(",")]
        missing = [str(i) for i in images if not i.is_file()]
        if missing:
            raise FileNotFoundError(f"no such image: {missing[0]}")
        print(summary(run(images, [float(t) for t in args.targets.split(",")], args.iters)))
        return 0
    return one_line_errors(p.prog, body)

if __name__ == "__main__":
    raise SystemExit(main())
