"""Encode images to a target rate.

  python -m encoder in.png 0.25 out.bit
  python -m encoder IMAGES_DIR --targets all --out OUTDIR      # OUTDIR/<image>_<BR>.bit + rates.csv

Exit status is 0 only if every stream lands within +-15 % of its target (2 if one does not).
In batch mode a bad image is one line naming it and the rest are encoded ("N of M images failed",
exit 1); a full or read-only OUTDIR stops at once. Re-running the same command resumes: streams made
from the same image with the same settings are kept (--force encodes all again); SIGTERM stops between
two streams (exit 143). --shard K/N encodes share K of N of the images (encoder/batch.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: keep errors one line

from encoder.refine import add_refine_option  # noqa: E402  (no TensorFlow behind these imports)
from models.targets import TOLERANCE  # noqa: E402
from rate_control.search import DEFAULT_AIM  # noqa: E402

PROG = "python -m encoder"   # the one name in usage and errors (encode.sh runs exactly this)


class UsageError(ValueError):
    """Bad command line; one line for the user."""


def parse_target(text: str) -> float:
    """A target bpp (models/targets.py owns the rule), checked before TensorFlow loads."""
    from models.targets import TargetError
    from models.targets import parse_target as parse
    try:
        return parse(text)
    except TargetError as e:
        raise UsageError(str(e)) from None


def parse_targets(text: str) -> list[float]:
    """'all' or a comma list, for batch mode."""
    from models.targets import TargetError
    from models.targets import parse_targets as parse
    try:
        return parse(text)
    except TargetError as e:
        raise UsageError(str(e)) from None


def _args(argv: list[str] | None) -> argparse.Namespace:
    from models.cli import ArgumentParser
    p = ArgumentParser(prog=PROG, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="input PNG, or a folder of images (batch mode)")
    p.add_argument("target", nargs="?", help="target bpp (single-image mode)")
    p.add_argument("output", nargs="?", help="output stream (single-image mode)")
    p.add_argument("--targets", default="all", help="batch mode: 'all' or comma-separated bpp values")
    p.add_argument("--out", help="batch mode: output folder")
    p.add_argument("--registry", default=None,
                   help="model registry YAML (default: $RATELOCK_REGISTRY or models/registry.yaml)")
    p.add_argument("--aim", type=float, default=DEFAULT_AIM,
                   help="aim within this fraction of the target (the band is +-15 %%); rates up to target*(1+aim)")
    add_refine_option(p)
    p.add_argument("--best-effort", action="store_true",
                   help="when the target is unreachable, write the closest stream anyway (exit status stays non-zero)")
    p.add_argument("--flatten-alpha", action="store_true", help="composite RGBA input on white instead of refusing it")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0 = library default)")
    p.add_argument("--force", action="store_true",
                   help="batch mode: encode every stream again, also those a re-run would keep")
    from models.batch import add_shard_option
    add_shard_option(p, "images (batch mode)")
    return p.parse_args(argv)


def _describe(c, name: str) -> str:
    out = (f"{name}: {c.bpp:.4f} bpp (target {c.target:.2f}, {c.deviation * 100:+.1f} %), model {c.model}, "
           f"delta {c.delta:.3f} (code {c.delta_code}), {c.analyses} analyses, {c.probes} probes")
    r = c.refinement
    if r is not None:
        out += (f", refined {r.gain_db:+.2f} dB at {(r.bpp_after / r.bpp_before - 1) * 100:+.1f} % rate "
                f"({r.equivalent_db:+.2f} dB equivalent, {r.iters} steps)" if r.kept
                else f", refinement not kept ({r.iters} steps)")
    return out


def _single(args: argparse.Namespace, encoder, rgb) -> int:
    from models.pngio import write_bytes_atomic
    from rate_control.search import Unreachable, search
    target = parse_target(args.target)
    out = Path(args.output)
    try:
        c = search(rgb, target, encoder.models, args.aim, refine=args.refine)
    except Unreachable as e:
        if not args.best_effort:
            print(f"{PROG}: {e}; nothing written (use --best-effort to write the closest stream)", file=sys.stderr)
            return 2
        write_bytes_atomic(out, e.best.data)
        print(f"{PROG}: {e}; --best-effort: wrote the closest stream, OUTSIDE the band", file=sys.stderr)
        print(_describe(e.best, str(out)))
        return 2
    write_bytes_atomic(out, c.data)
    print(_describe(c, str(out)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: exit 0 only if every stream is within the band; errors are one line."""
    args = _args(argv)
    from models.cli import one_line_errors
    return one_line_errors(PROG, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    batch = Path(args.input).is_dir()
    if not batch and (args.target is None or args.output is None):
        raise UsageError("usage: python -m encoder in.png TARGET out.bit  |  python -m encoder DIR --out OUTDIR")
    if not 0 <= args.aim < TOLERANCE:
        raise UsageError(f"--aim must be in [0, {TOLERANCE:g})")
    # Everything about the input and the destination is checked before TensorFlow and the models load.
    from encoder.imageio import image_paths, load_rgb8
    from models.pngio import check_writable, ensure_output_dir
    if batch:
        parse_targets(args.targets)
        if not args.out:
            raise UsageError("batch mode needs --out OUTDIR")
        images = args.shard.take(image_paths(args.input), key=lambda p: p.name)
        out = ensure_output_dir(args.out)
    else:
        parse_target(args.target)
        check_writable(args.output)
        rgb = load_rgb8(args.input, args.flatten_alpha)
    from encoder.api import Encoder
    from models.runtime import configure
    configure(args.threads)
    enc = Encoder(args.registry, args.aim, args.refine)
    if batch:
        from encoder.batch import run
        return run(args, enc, images, out, PROG, parse_targets(args.targets))
    return _single(args, enc, rgb)


if __name__ == "__main__":
    sys.exit(main())
