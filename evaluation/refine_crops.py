"""What latent refinement buys, quickly: centre crops of Kodak images, each encoded with and without it.

Why: the whole-Kodak run (`python -m evaluation`) costs 192 refined encodes, hours on a slow CPU; this
is the quick check behind a refinement change. Each line is one rate-controlled encode; "equivalent"
values the rate change at the image's own slope (rate_control.search.Refinement.equivalent_db), so a
stream that saves bits is credited for them as a BD-rate comparison would.

    python -m evaluation.refine_crops --images kodim01,kodim07,kodim15,kodim21 --targets 0.06,0.25,1.0
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from evaluation.datasets import KODAK
from models.cli import ArgumentParser, one_line_errors

PROG = "python -m evaluation.refine_crops"


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    from encoder.api import Encoder
    from encoder.refine import DEFAULT_ITERS
    p = ArgumentParser(prog="python -m evaluation.refine_crops", description=__doc__.splitlines()[0])
    p.add_argument("--images", default="kodim01,kodim07,kodim15,kodim21", help="Kodak names, comma-separated")
    p.add_argument("--targets", default="0.06,0.25,1.0", help="bpp targets, comma-separated")
    p.add_argument("--crop", type=int, default=256, help="centre crop side in pixels (0 = whole image)")
    p.add_argument("--refine", type=int, default=DEFAULT_ITERS, help="refinement steps (default: %(default)s)")
    p.add_argument("--registry", default=None, help="model registry (default: the committed one)")
    args = p.parse_args(argv)
    enc = Encoder(args.registry, refine=args.refine)
    eq = []
    for name in args.images.split(","):
        rgb = np.asarray(Image.open(KODAK / f"{name}.png").convert("RGB"))
        if args.crop:
            h, w = rgb.shape[:2]
            rgb = np.ascontiguousarray(rgb[(h - args.crop) // 2:(h + args.crop) // 2,
                                           (w - args.crop) // 2:(w + args.crop) // 2])
        for t in (float(v) for v in args.targets.split(",")):
            t0 = time.perf_counter()
            c = enc.encode(rgb, t)
            r = c.refinement
            eq.append(r.equivalent_db if r is not None else 0.0)
            change = f"{c.bpp / r.bpp_before - 1:+.2%}" if r is not None else "n/a"
            print(f"{name} {t:.2f} bpp: {c.bpp:.4f} ({c.deviation:+.1%} of target), delta code {c.delta_code}, "
                  f"gain {r.gain_db if r else 0:+.3f} dB, rate {change}, equivalent {eq[-1]:+.3f} dB, "
                  f"{'kept' if r is not None and r.kept else 'not kept'}, {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"mean equivalent gain: {np.mean(eq):+.3f} dB over {len(eq)} encodes ({args.refine} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
