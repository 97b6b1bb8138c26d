"""Decode ratelock streams.

  python -m decoder in.bit out.png
  python -m decoder --dir INDIR OUTDIR        # every *.bit/*.bits -> OUTDIR/<stream name>.png

Errors are one line on stderr and a non-zero exit; no partial output is left.
With --dir a bad stream is one line naming it and the rest are decoded ("N of M streams failed",
exit 1); a full or read-only OUTDIR stops at once. Re-running the same command resumes: PNGs already
there and valid are kept (--force decodes all again); SIGTERM stops between two files (exit 143).
The streams decode in a worker process that is replaced when its memory has grown (decoder/worker.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
                   help="print a JSON line per stream: header, parse-integer hashes (symbols; v3: y_hat_q), timing "
                        "(with --dir every stream is decoded, as with --force)")
    p.add_argument("--force", action="store_true",
                   help="with --dir, decode every stream again, also those whose PNG is already there and valid")
    from models.cli import non_negative_int
    p.add_argument("--recycle", type=non_negative_int, default=1000, metavar="N",
                   help="with --dir, decode in a worker process and replace it every N streams if its memory has "
                        "grown (default 1000; 0: decode in this process)")
    return p.parse_args(argv)


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
    if out_dir is not None and args.recycle:
        from models.weights import load_registry
        load_registry(args.registry)             # a bad registry is one line here, not one per stream
        return _batch(args, streams, out_dir, _in_worker(args))
    decode = _in_process(args)
    if out_dir is None:
        decode(streams[0], Path(args.output))
        return 0
    return _batch(args, streams, out_dir, decode)


def _in_process(args: argparse.Namespace):
    """decode(src, dst) in this process."""
    from models.runtime import configure
    configure(args.threads)
    from decoder import decode as D
    from decoder.worker import decode_file
    limits = D.Limits(max_pixels=args.max_pixels)
    models = D.ModelCache(args.registry, backend=args.backend)

    def decode(src: Path, dst: Path) -> None:
        info = decode_file(src, dst, models, limits, args.info)
        if info is not None:
            print(json.dumps(info), flush=True)
    decode.close = lambda signum=None: None
    return decode


class StreamFailed(ValueError):
    """A stream the worker could not decode; its message is the worker's one line."""


def _in_worker(args: argparse.Namespace):
    """decode(src, dst) in a worker process (decoder/worker.py); TensorFlow never loads in this one."""
    from decoder.worker import Pool
    from models.pngio import OutputError
    wargs = ["--max-pixels", str(args.max_pixels), "--backend", args.backend, "--threads", str(args.threads)]
    wargs += (["--registry", args.registry] if args.registry else []) + (["--info"] if args.info else [])
    pool = Pool(wargs, args.recycle)

    def decode(src: Path, dst: Path) -> None:
        reply = pool.decode(src, dst)
        if not reply["ok"]:
            if reply.get("output_errno") is not None:
                raise OutputError(reply["error"], reply["output_errno"])
            raise StreamFailed(reply["error"])
        if reply.get("info") is not None:
            print(json.dumps(reply["info"]), flush=True)
    decode.close = pool.close
    return decode


def _batch(args: argparse.Namespace, streams: list[Path], out_dir: Path, decode) -> int:
    """Every stream of the folder (module docstring); models/batch.py keeps the account."""
    import signal

    from decoder.resume import decoded_already
    from models.batch import Batch, Stopped, stop_on_sigterm
    from models.pngio import remove_stale_temps
    remove_stale_temps(out_dir)
    batch = Batch(PROG, len(streams), "streams", desc="decoding")
    again = args.force or args.info

    def work(src: Path) -> bool:
        dst = out_dir / (src.stem + ".png")
        if not again and decoded_already(src, dst):
            return False
        decode(src, dst)
        return True
    try:
        with stop_on_sigterm():
            batch.run(streams, lambda s: s.name, work)
    except Stopped:
        decode.close(signal.SIGTERM)             # the worker's file in progress finishes or is removed
        return batch.stopped()
    except BaseException:
        decode.close(signal.SIGTERM)
        raise
    decode.close()
    return batch.finish()


if __name__ == "__main__":
    sys.exit(main())
