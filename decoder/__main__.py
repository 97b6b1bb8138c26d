"""Decode ratelock streams.

  python -m decoder in.bit out.png
  python -m decoder --dir INDIR OUTDIR        # every *.bit/*.bits -> OUTDIR/<stream name>.png

Errors are one line on stderr and a non-zero exit; no partial output is left.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: keep errors one line
PROG = "python -m decoder"   # the one name in usage and errors (decode.sh runs exactly this)
STREAM_SUFFIXES = (".bit", ".bits")


def _args(argv: list[str] | None) -> argparse.Namespace:
    from models.cli import ArgumentParser
    p = ArgumentParser(prog=PROG, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="stream file, or with --dir a folder of streams")
    p.add_argument("output", help="output PNG, or with --dir an output folder")
    p.add_argument("--dir", action="store_true", help="decode every stream in the input folder")
    p.add_argument("--registry", default=None,
                   help="model registry YAML (default: $RATELOCK_REGISTRY or models/registry.yaml)")
    from decoder.bitstream import MAX_PIXELS
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"refuse larger images, from the header (default {MAX_PIXELS})")
    p.add_argument("--backend", choices=("tf", "jax"), default="tf",
                   help="synthesis backend: tf (default, CPU) or jax (any device JAX finds; needs jax installed)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0 = library default)")
    p.add_argument("--info", action="store_true",
                   help="print a JSON line per stream: header, parse-integer hashes (symbols; v3: y_hat_q), timing")
    return p.parse_args(argv)


def _decode_one(src: Path, dst: Path, models, limits, info: bool) -> None:
    from decoder import decode as D
    from models.pngio import write_png_atomic
    t0 = time.perf_counter()
    data = D.read_stream(src, limits)
    parsed = D.parse(data, models, limits)
    model = models.get(parsed.header)
    rgb = D.to_uint8(D.synthesize(model.synthesis, D.dequantize(parsed)), parsed.header.width, parsed.header.height)
    write_png_atomic(dst, rgb)
    if info:
        h = parsed.header
        print(json.dumps({"stream": str(src), "output": str(dst), "width": h.width, "height": h.height,
                          "target_index": h.target_index, "model": model.entry.name, "delta_code": h.delta_code,
                          "bytes": len(data), "bpp": 8 * len(data) / (h.width * h.height),
                          "symbols_sha256_16": parsed.symbol_hash(), "integers": parsed.integer_hashes(),
                          "seconds": round(time.perf_counter() - t0, 4)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: exit 0 only if every stream decoded; errors are one line."""
    args = _args(argv)
    from models.cli import one_line_errors
    return one_line_errors(PROG, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    # Input and destination are checked before TensorFlow loads and before any decoding, so a bad destination costs no start-up.
    from models.pngio import check_writable, ensure_output_dir
    if args.dir:
        src_dir = Path(args.input)
        if not src_dir.is_dir():
            raise NotADirectoryError(f"{src_dir}: not a folder")
        streams = sorted(p for p in src_dir.iterdir() if p.suffix in STREAM_SUFFIXES)
        if not streams:
            raise FileNotFoundError(f"{src_dir}: no .bit/.bits streams")
        out_dir = ensure_output_dir(args.output)
    else:
        streams, out_dir = [Path(args.input)], None
        if not streams[0].is_file():
            raise FileNotFoundError(f"{args.input}: no such file")
        check_writable(args.output)
    from models.runtime import configure
    configure(args.threads)
    from decoder import decode as D
    limits = D.Limits(max_pixels=args.max_pixels)
    models = D.ModelCache(args.registry, backend=args.backend)
    failed = 0
    it = streams
    if args.dir and not args.info:
        from tqdm import tqdm
        it = tqdm(streams, desc="decoding", unit="stream", file=sys.stderr)
    for src in it:
        dst = out_dir / (src.stem + ".png") if out_dir else Path(args.output)
        try:
            _decode_one(src, dst, models, limits, args.info)
        except D.DecodeError as e:
            if not args.dir:
                raise
            failed += 1
            print(f"{PROG}: {src.name}: {e}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {failed} of {len(streams)} streams failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
