"""`make run`: encode the bundled sample with encoder/encode.sh, decode with decoder/decode.sh, report.

Runs the two shell entry points exactly as a user would, so the demo proves the
installed commands work, then prints rate and quality and which weights were used.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.cli import ArgumentParser, one_line_errors

if TYPE_CHECKING:
    from models.weights import Entry, Registry

ROOT = Path(__file__).resolve().parent.parent

PROG = "python -m encoder.demo"


def used_entry(registry: Registry, decode_info: dict) -> Entry:
    """The registry entry of the model that made the stream: the header's target index names it.

    The search may pick a neighbouring model, so the target alone does not say which note applies.
    """
    return registry.by_target(int(decode_info["target_index"]))


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    """Encode, decode and report one image through the shell entry points."""
    p = ArgumentParser(prog="python -m encoder.demo", description=__doc__)
    p.add_argument("image", help="input PNG")
    p.add_argument("target", type=float, help="target bpp")
    p.add_argument("--out", default="out", help="folder for the stream and the decoded PNG")
    p.add_argument("--registry", default=None, help="model registry YAML (default: models/registry.yaml)")
    args = p.parse_args(argv)

    from PIL import Image

    from evaluation.metrics import psnr
    from models.weights import load_registry
    reg = load_registry(args.registry)
    trained = [e for e in reg.entries if e.trained]
    if not reg.entries:
        print("no models registered", file=sys.stderr)
        return 1
    names = sorted({e.name for e in reg.entries})
    if len(trained) < len(reg.entries):
        print("WARNING: running UNTRAINED PLACEHOLDER weights for some targets: rates are real, quality is not.")
    print(f"models: {', '.join(names)} ({len(reg.entries)} targets registered, {len({e.hash for e in reg.entries})} distinct)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    bit, png = out / f"{stem}.bit", out / f"{stem}.png"
    extra = ["--registry", args.registry] if args.registry else []
    r = subprocess.run([str(ROOT / "encoder" / "encode.sh"), args.image, str(args.target), str(bit), *extra])
    if r.returncode != 0:
        print(f"encode failed (exit {r.returncode})", file=sys.stderr)
        return r.returncode
    r = subprocess.run([str(ROOT / "decoder" / "decode.sh"), str(bit), str(png), "--info", *extra],
                       stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print(f"decode failed (exit {r.returncode})", file=sys.stderr)
        return r.returncode
    info = json.loads(r.stdout.strip().splitlines()[-1])
    used = used_entry(reg, info)
    print(f"model used: {used.name} ({'trained' if used.trained else 'UNTRAINED placeholder'})"
          + (f": {used.note}" if used.note else ""))
    src = np.asarray(Image.open(args.image).convert("RGB"))
    dec = np.asarray(Image.open(png).convert("RGB"))
    if src.shape != dec.shape:
        print(f"size mismatch: {src.shape} vs {dec.shape}", file=sys.stderr)
        return 1
    bpp = 8 * bit.stat().st_size / (src.shape[0] * src.shape[1])
    print(f"{args.image}: {src.shape[1]}x{src.shape[0]}, target {args.target:.2f} bpp -> {bpp:.4f} bpp "
          f"({(bpp / args.target - 1) * 100:+.1f} %), PSNR-RGB {psnr(src, dec):.2f} dB")
    print(f"stream: {bit}   decoded: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
