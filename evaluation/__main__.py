"""CLI: python -m evaluation IMAGES_DIR --out OUTDIR [options].

Rate-matches every codec to the challenge targets on every image, scores the
results and writes per-image CSV, summary, BD-rate table, RD plots and report.md.
`--shard K/N` evaluates share K of the images; `python -m evaluation merge DIR... --out OUTDIR`
joins the shards' folders into the report one run would write (evaluation/shards.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from models.cli import ArgumentParser, one_line_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ start-up chatter would drown the progress bar
os.environ.setdefault("MPLBACKEND", "Agg")


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2, no traceback."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from encoder.refine import add_refine_option
    from evaluation.codecs import ALL_CODECS

    p = ArgumentParser(prog="python -m evaluation", description="Rate-matched codec evaluation at the challenge targets.")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of lossless RGB images (png/ppm/bmp/tif)")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output folder (created; holds cache/ too)")
    p.add_argument("--codecs", default=",".join(ALL_CODECS),
                   help=f"comma-separated codecs to run, from {','.join(ALL_CODECS)} (default: all)")
    p.add_argument("--targets", default="all",
                   help="'all' or a comma-separated subset of the challenge targets, e.g. 0.25,0.5")
    p.add_argument("--anchor", default="jpeg2000", help="codec the BD-rates are computed against (default: jpeg2000)")
    p.add_argument("--force", action="store_true", help="recompute every point, ignoring OUTDIR/cache/")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (sorted by name)")
    p.add_argument("--crop", type=int, default=None, metavar="PX",
                   help="centre-crop each image to at most PX x PX for quick runs (MS-SSIM needs >= 176)")
    p.add_argument("--no-vmaf", action="store_true", help="skip VMAF (reported as n/a)")
    p.add_argument("--registry", default=None, help="model registry passed to encoder.api.Encoder (ours)")
    add_refine_option(p, note="codec 'ours'; the default is what encode.sh ships")
    p.add_argument("--with", dest="with_dir", default=None, metavar="DIR",
                   help="also report the codecs of an earlier run's DIR/per_image.csv that this run does not compute "
                        "(same images and targets), e.g. the committed anchors: "
                        "--codecs ours --with evaluation/results/kodak")
    p.add_argument("--save-bitstreams", action="store_true",
                   help="also keep every chosen bitstream in OUTDIR/bitstreams/")
    from models.batch import add_shard_option
    add_shard_option(p, "images (after --limit); join the shards with `python -m evaluation merge`")
    return p.parse_args(argv)


def _targets(spec: str) -> list[float]:
    """Challenge targets only: anchors are rate-matched at the eight targets."""
    from models.targets import TargetError, parse_targets
    try:
        return parse_targets(spec, challenge_only=True)
    except TargetError as e:
        raise UsageError(f"--targets: {e}") from None


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["merge"]:
        from evaluation.shards import main as merge_main
        return merge_main(list(sys.argv[2:] if argv is None else argv[1:]))
    args = parse_args(argv)

    def body() -> int:
        try:
            return _run(args, argv)
        except UsageError as exc:
            print(f"evaluation: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("evaluation: interrupted (finished points are cached; rerun to resume)", file=sys.stderr)
            return 130
    return one_line_errors("evaluation", body)


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from evaluation.codecs import ALL_CODECS

    images_dir = Path(args.images_dir)
    if not images_dir.is_dir():
        raise UsageError(f"images directory not found: {images_dir}")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be >= 1")
    if args.crop is not None and args.crop < 16:
        raise UsageError("--crop must be >= 16")
    names = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = [c for c in names if c not in ALL_CODECS]
    if unknown or not names:
        raise UsageError(f"unknown codec(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(ALL_CODECS)}")
    targets = _targets(args.targets)

    from evaluation.runner import list_images

    all_images = list_images(images_dir, args.limit)
    if not all_images:
        raise UsageError(f"no images (png/ppm/pnm/bmp/tif) in {images_dir}")
    images = args.shard.take(all_images, key=lambda p: p.name)
    outdir = Path(args.out)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {outdir}: {exc}") from None

    from tqdm import tqdm

    from evaluation import codecs as codec_mod
    from evaluation import ffmpeg, report
    from evaluation.runner import RunLog, evaluate

    t0 = time.perf_counter()
    log = RunLog()
    ordered = [n for n in ALL_CODECS if n in names]
    runnable = []
    codec_info: dict[str, dict[str, Any]] = {}
    for name in ordered:
        codec = codec_mod.make(name, registry=args.registry, refine=args.refine)
        reason = codec.unavailable()
        info: dict[str, Any] = {"available": reason is None, "reason": reason}
        if reason is None:
            info["version"] = codec.version()
            info["settings"] = codec.settings()
            runnable.append(codec)
        else:
            log.skipped[name] = reason
            print(f"evaluation: skipping {name}: {reason}", file=sys.stderr)
        codec_info[name] = info
    if not runnable:
        raise UsageError("none of the requested codecs can run here: "
                         + "; ".join(f"{n}: {r}" for n, r in log.skipped.items()))

    # Checked before the long part, so a bad --with costs nothing.
    earlier = earlier_rows(Path(args.with_dir), codec_info, {p.stem for p in images}, targets, log.notes) \
        if args.with_dir else []

    with_vmaf = not args.no_vmaf
    if with_vmaf and not (ffmpeg.exe() and ffmpeg.has_filter("libvmaf")):
        with_vmaf = False
        log.notes.append("VMAF not computed: ffmpeg with the libvmaf filter is not available")
        print("evaluation: VMAF disabled: no ffmpeg with libvmaf", file=sys.stderr)
    if args.no_vmaf:
        log.notes.append("VMAF not computed (--no-vmaf)")
    if args.anchor not in [c.name for c in runnable] + [r["codec"] for r in earlier]:
        log.notes.append(f"BD-rate anchor {args.anchor!r} was not run, so there is no BD-rate table")
    if args.crop is not None and args.crop < 176:
        log.notes.append(f"--crop {args.crop} < 176: MS-SSIM (5 scales) is n/a for these images")

    pre_notes = list(log.notes)
    total = len(runnable) * len(images) * len(targets)
    with tqdm(total=total, unit="pt", desc="evaluating", dynamic_ncols=True) as bar:
        rows = evaluate(runnable, images, targets, outdir, crop=args.crop, force=args.force, with_vmaf=with_vmaf,
                        log=log, progress=bar.update, save_bitstreams=args.save_bitstreams)
    wall = time.perf_counter() - t0
    from evaluation.shards import save_run, small_images_note, title
    small_images_note(rows, log.notes)
    if earlier:
        rows += earlier
        codec_info = {k: codec_info[k] for k in [*ALL_CODECS, *codec_info] if k in codec_info}

    tools = {"ffmpeg": {"path": ffmpeg.exe(), "version": ffmpeg.version()},
             "vmaf": {"computed": with_vmaf, "command": ffmpeg.vmaf_command()}}
    command = "python -m evaluation " + shlex.join(sys.argv[1:] if argv is None else argv)
    save_run(outdir, {"shard": [args.shard.k, args.shard.n], "images": [p.stem for p in images],
                      "all_images": [p.stem for p in all_images], "targets": targets, "crop": args.crop,
                      "anchor": args.anchor, "codec_info": codec_info, "tools": tools, "images_dir": str(images_dir),
                      "pre_notes": pre_notes, "rows": rows, "points": log.points, "wall_s": wall, "command": command})
    if not rows:
        print(f"shard {args.shard}: no images in this share; {outdir / 'run.json'} written for the merge")
        return 0
    shard = "" if args.shard.whole else f" (shard {args.shard} of {len(all_images)})"
    res = report.write_all(outdir, rows, codec_info, anchor=args.anchor,
                           title=title(str(images_dir), len(images), args.crop) + shard, tools=tools,
                           report_args=dict(images_dir=str(images_dir), n_images=len(images), crop=args.crop,
                                            targets=targets, failures=log.failures, notes=log.notes, wall_s=wall,
                                            command=command))

    print(f"\n{log.computed} points computed, {log.cache_hits} from cache, {len(log.failures)} failed; "
          f"{wall:.1f} s")
    print(res["bd_md"])
    for f in log.failures:
        print(f"evaluation: failed: {f}", file=sys.stderr)
    print(f"report: {outdir / 'report.md'}")
    return 1 if log.failures else 0


def earlier_rows(folder: Path, codec_info: dict[str, dict[str, Any]], images: set[str], targets: list[float],
                 notes: list[str]) -> list[dict[str, Any]]:
    """Rows of the codecs in an earlier run's per_image.csv that this run did not compute, for these images and
    targets; each must be complete, so a BD-rate never mixes image sets. Adds them to codec_info."""
    import csv
    import json

    from evaluation.runner import CSV_FIELDS
    path = folder / "per_image.csv"
    if not path.is_file():
        raise UsageError(f"--with: {path} not found")
    info = json.loads((folder / "codecs.json").read_text()).get("codecs", {}) if (folder / "codecs.json").is_file() \
        else {}
    keys = {(im, round(t, 4)) for im in images for t in targets}
    out: dict[str, list[dict[str, Any]]] = {}
    with path.open() as fh:
        for r in csv.DictReader(fh):
            if r["codec"] in codec_info or (r["image"], round(float(r["target"]), 4)) not in keys:
                continue
            row: dict[str, Any] = {k: r.get(k, "") for k in CSV_FIELDS}
            for k in ("target", "bpp", "psnr_rgb", "psnr_y", "msssim_y", "msssim_rgb", "vmaf", "enc_s", "dec_s"):
                row[k] = float(row[k]) if row[k] not in ("", "nan") else float("nan")
            row["within_band"] = row["within_band"] == "True"
            row["calls"] = int(float(row["calls"])) if row["calls"] else 0
            out.setdefault(r["codec"], []).append(row)
    rows = []
    for codec, got in out.items():
        if len(got) != len(keys):
            raise UsageError(f"--with: {codec} has {len(got)} of the {len(keys)} (image, target) points in {path}")
        codec_info[codec] = {**info.get(codec, {"available": True}), "from": str(path)}
        rows += got
    if rows:
        notes.append(f"{', '.join(out)}: taken from the earlier run {path} (--with), not computed here")
    return rows


if __name__ == "__main__":
    sys.exit(main())
