"""Build the folder that travels to a lent accelerator: training images, Kodak, and the state to resume.

python -m training.device_pack --config training/configs/base.yaml [--out device-pack]

What the device machine gets is the tracked tree plus this folder, 64 MiB in all (the size that travels in),
and ../shared does not travel. So:
- training images are downscaled to at most --max-side px and stored as WebP (lossy, --quality);
  each keeps its original name as `<name>.pack.webp`, so training/data.split_holdout holds out
  the same images as on this machine;
- Kodak (the curve) is stored as lossless WebP;
- the resume point is written as a full (not slim) committed state: a slim state's shared
  tensors live in models/weights, which is set aside for the trip (training/device.sh aside).
A run checkpoint (runs/<name>/ckpt, with Adam moments) is carried instead when it fits.

The pack's size and the tree's size (without the set-aside files) are printed, and the pack is
refused when the sum exceeds the limit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from evaluation.datasets import KODAK
from models.cli import ArgumentParser, one_line_errors

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 64 * 2 ** 20
DATA_LIMIT = 45 * 2 ** 20
ASIDE = ("models/weights", "models/checkpoints")       # tracked, large, not needed on the device

PROG = "python -m training.device_pack"


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of tracked files that will travel: everything tracked except what training/device.sh sets aside."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    total = 0
    for rel in out.decode().split("\0"):
        if rel and not rel.startswith(ASIDE) and (root / rel).is_file():
            total += (root / rel).stat().st_size
    return total


def _webp(src: Path, dst: Path, max_side: int, quality: int, lossless: bool = False) -> int:
    with Image.open(src) as im:
        im = im.convert("RGB")
        if max_side and max(im.size) > max_side:
            s = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
        im.save(dst, "WEBP", quality=100 if lossless else quality, lossless=lossless, method=4)
    return dst.stat().st_size


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = ArgumentParser(prog="python -m training.device_pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the run's config (its name, train_dir and init_from)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override; repeatable")
    p.add_argument("--out", default=str(ROOT / "device-pack"), help="pack folder (git-ignored; carried by name)")
    p.add_argument("--kodak", default=str(KODAK), help="Kodak folder ('' = none)")
    p.add_argument("--max-side", type=int, default=768, help="training images are downscaled to this side")
    p.add_argument("--quality", type=int, default=86, help="WebP quality of the training images")
    p.add_argument("--limit", type=int, default=0, help="pack only the first N training images (dry runs)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs"), help="where a run checkpoint would be")
    p.add_argument("--state-dir", default=str(ROOT / "models" / "checkpoints"), help="committed states")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from training import checkpoint, state
    from training import config as C
    from training.data import list_images
    cfg = C.load(args.config, args.set)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "train").mkdir(parents=True)
    files = list_images(cfg.train_dir)[:args.limit or None]
    it = files
    if not args.no_progress:
        from tqdm import tqdm
        it = tqdm(files, desc="packing training images", unit="img")
    data = sum(_webp(f, out / "train" / f"{f.name}.pack.webp", args.max_side, args.quality) for f in it)
    if data > DATA_LIMIT:
        print(f"device_pack: error: training images take {data / 2 ** 20:.1f} MiB > {DATA_LIMIT / 2 ** 20:.0f} MiB; "
              "lower --max-side or --quality", file=sys.stderr)
        return 2
    kodak = 0
    if args.kodak:
        (out / "kodak").mkdir()
        kodak = sum(_webp(f, out / "kodak" / f"{f.stem}.webp", 0, 100, lossless=True)
                    for f in sorted(Path(args.kodak).glob("*.png")))
    # The resume point, nearest first: run checkpoint, committed state, the config's parent.
    ckpt = Path(args.runs_dir) / cfg.name / "ckpt"
    src = "fresh initialisation"
    budget = LIMIT - tree_bytes() - data - kodak
    ckpt_bytes = sum(f.stat().st_size for f in ckpt.iterdir()) if checkpoint.exists(ckpt) else 0
    if ckpt_bytes and ckpt_bytes < budget:
        shutil.copytree(ckpt, out / "run" / "ckpt")
        src = f"run checkpoint {ckpt} (with Adam moments)"
    else:
        committed = Path(args.state_dir) / f"{cfg.name}.npz"
        parent = ROOT / cfg.init_from if cfg.init_from else None
        path = committed if committed.exists() else parent
        if path is not None and path.exists():
            params, meta = state.load(path)
            extra = {k: v for k, v in meta.items() if k not in ("step", "names", "config", "export")}
            if path != committed and cfg.init_widen:     # the parent widened, continued (training/widen.py)
                from training.widen import widened_parent
                params, cont = widened_parent(cfg)
                extra, step = {k: v for k, v in cont.items() if k not in ("step", "config")}, cont["step"]
            elif path != committed:      # a fine-tune's first trip: start from the parent, recorded as lineage
                extra = {"lineage": [{"name": meta["config"]["name"], "state": cfg.init_from, "step": meta["step"],
                                      "wall_seconds": meta.get("wall_seconds", 0.0)}] + meta.get("lineage", []),
                         "history": [], "runs": []}
                step = 0
            else:
                step = meta["step"]
            state.save(params, step, out / "state" / f"{cfg.name}.npz", cfg.__dict__, extra)
            src = f"committed state {path} (step {step}; Adam moments restart)"
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    travel = total + tree_bytes()
    print(f"pack {out}: training images {data / 2 ** 20:.1f} MiB ({len(files)} files, max side {args.max_side}, "
          f"WebP q{args.quality}), Kodak {kodak / 2 ** 20:.1f} MiB, resume from {src}")
    print(f"travels: pack {total / 2 ** 20:.1f} MiB + tracked tree without {', '.join(ASIDE)} "
          f"{tree_bytes() / 2 ** 20:.1f} MiB = {travel / 2 ** 20:.1f} MiB of {LIMIT / 2 ** 20:.0f} MiB")
    if travel > LIMIT:
        print("device_pack: error: over the limit", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
