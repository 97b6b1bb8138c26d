"""`python -m evaluation.metrics REF.png DEC.png [--json]`: every JPEG AI metric of one pair."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from evaluation import metrics
from models.cli import ArgumentParser, one_line_errors

PROG = "python -m evaluation.metrics"


def _load(path: str) -> np.ndarray:
    """8-bit RGB, through the encoder's loader: 16-bit, CMYK and alpha are refused in one line, not converted."""
    from encoder.imageio import load_rgb8
    return load_rgb8(path)


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog=PROG, description="JPEG AI objective metrics of DEC against REF "
                        "(10-bit BT.709 YUV 4:4:4; see evaluation/metrics/__init__.py).")
    ap.add_argument("ref", help="reference image: 8-bit RGB, grey or palette (PNG or anything Pillow reads)")
    ap.add_argument("dec", help="decoded image, same size")
    ap.add_argument("--json", action="store_true", help="print one JSON object {metric: value}")
    ap.add_argument("--no-vmaf", action="store_true", help="skip VMAF (no ffmpeg needed)")
    ap.add_argument("--time", action="store_true",
                    help="after one warm-up pass (imports), time a second pass and print seconds per metric to stderr")
    args = ap.parse_args(argv)

    def body() -> int:
        names = tuple(n for n in metrics.JPEG_AI_NAMES if not (args.no_vmaf and n == "vmaf"))
        ref, dec = _load(args.ref), _load(args.dec)
        scores = metrics.jpeg_ai(ref, dec, names)
        if args.time:
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            metrics.jpeg_ai(ref, dec, names, timings)
            total = time.perf_counter() - t0
            print(f"{ref.shape[1]}x{ref.shape[0]}: {total:.2f} s for {len(names)} metrics ("
                  + ", ".join(f"{k} {v:.3f}" for k, v in timings.items()) + ")", file=sys.stderr)
        if args.json:
            print(json.dumps(scores))
        else:
            for name, value in scores.items():
                print(f"{name:9s} {value:.6f}")
        return 0

    return one_line_errors(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
