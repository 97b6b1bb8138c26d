"""ratelock conformance suite: the pre-submission check.

  python -m conformance IMAGES_DIR [--targets all|0.25,...] [--report OUTDIR] [--quick]
                                   [--registry PATH] [--exclusions FILE] [--shard K/N]

Checks, in order: rate (+-15 % on disk), determinism (encode/decode repeat,
runtime configurations), parity (CPU/GPU, float perturbation of the parse
path), golden (committed streams), robustness (hostile streams).
Writes OUTDIR/report.json and OUTDIR/report.md; exit status 0 only if every
check passes, 1 if any fails, 2 for bad usage. See conformance/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from models.cli import ArgumentParser, one_line_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
PROG = "conformance"


class UsageError(ValueError):
    pass


def parse_targets(text: str) -> list[float]:
    from models.targets import parse_targets as parse
    try:
        out = parse(text)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not out:
        raise UsageError("no targets given")
    return out


def build_parser() -> argparse.ArgumentParser:
    from conformance.suite import CHECKS
    from encoder.refine import add_refine_option
    p = ArgumentParser(prog="python -m conformance", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of 8-bit RGB images (png, ppm, bmp, tif, ...)")
    p.add_argument("--targets", default="all",
                   help="'all' (the 8 challenge targets) or comma-separated bpp values, e.g. 0.25,0.5")
    p.add_argument("--report", default="runs/conformance", metavar="OUTDIR",
                   help="output folder for report.json, report.md, the encoded streams and failing robustness cases "
                        "(default: runs/conformance, git-ignored)")
    p.add_argument("--quick", action="store_true",
                   help="faster run: determinism/parity on the first 2 images with 3 runtime configurations, "
                        "100 robustness cases and 3 real-CLI runs (rate is always checked on every pair)")
    p.add_argument("--registry", default=None,
                   help="model registry YAML (default: $RATELOCK_REGISTRY or models/registry.yaml)")
    p.add_argument("--exclusions", default=None, metavar="FILE",
                   help="declared unreachable (image, target) pairs: YAML 'exclusions: [{image, target, reason}]' or "
                        "CSV 'image,target,reason'; target may be 'all'")
    p.add_argument("--checks", default=",".join(CHECKS),
                   help=f"comma-separated subset of {','.join(CHECKS)} (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed for robustness cases and weight perturbation (default 0)")
    p.add_argument("--cases", type=int, default=None,
                   help="number of robustness cases (default 300, or 100 with --quick)")
    p.add_argument("--case-timeout", type=float, default=30.0, help="seconds allowed per robustness case (default 30)")
    p.add_argument("--mem-limit-gb", type=float, default=4.0,
                   help="RLIMIT_AS for every robustness decoder process, in GiB (default 4)")
    p.add_argument("--golden-dir", default=None, help="golden stream folder (default: conformance/streams)")
    p.add_argument("--kodak", default=None, help="Kodak folder for the golden sources (default: ../shared/data/kodak)")
    p.add_argument("--configs", default=None,
                   help="determinism: comma-separated runtime configurations to run, the first being the reference "
                        "(default: all 5, or the first 3 with --quick); names in conformance/README.md")
    p.add_argument("--gpu-backend", choices=("tf", "jax"), default="tf",
                   help="parity: decode on the GPU with TensorFlow (default) or with the decoder's JAX synthesis "
                        "backend, e.g. on a machine with JAX but no TensorFlow GPU; without a GPU, jax still compares "
                        "the JAX backend on the CPU with TF")
    add_refine_option(p, default=0, note="the rate check's encodes and re-encodes; a package's gate uses the "
                                         "package's own")
    p.add_argument("--keep-work", action="store_true", help="keep decoded images and robustness cases under OUTDIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from models.batch import add_shard_option
    add_shard_option(p, "images and robustness cases (the golden check runs in share 0); every share must pass")
    return p


def options(args: argparse.Namespace):
    from conformance.checks.rate import load_exclusions
    from conformance.suite import CHECKS, Options
    images = Path(args.images_dir)
    if not images.is_dir():
        raise UsageError(f"{images}: not a folder")
    checks = tuple(c.strip() for c in args.checks.split(",") if c.strip())
    bad = [c for c in checks if c not in CHECKS]
    if bad or not checks:
        raise UsageError(f"unknown check(s) {', '.join(bad) or '(none)'}; choose from {', '.join(CHECKS)}")
    if args.cases is not None and args.cases < 1:
        raise UsageError("--cases must be at least 1")
    load_exclusions(args.exclusions)          # fail fast on a bad file, before anything is encoded
    from conformance.decoding import CONFIGS
    configs = tuple(c.strip() for c in args.configs.split(",") if c.strip()) if args.configs else None
    unknown = [c for c in configs or () if c not in {x.name for x in CONFIGS}]
    if unknown:
        raise UsageError(f"unknown configuration(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(x.name for x in CONFIGS)}")
    o = Options(images, parse_targets(args.targets), Path(args.report), registry=args.registry,
                exclusions=Path(args.exclusions) if args.exclusions else None, quick=args.quick, checks=checks,
                seed=args.seed, cases=args.cases, case_timeout=args.case_timeout, mem_limit_gb=args.mem_limit_gb,
                keep_work=args.keep_work, progress=not args.no_progress, configs=configs,
                gpu_backend=args.gpu_backend, refine=args.refine, shard=(args.shard.k, args.shard.n))
    if args.golden_dir:
        o.golden_dir = Path(args.golden_dir)
    if args.kodak:
        o.kodak_dir = Path(args.kodak)
    return o


def main(argv: list[str] | None = None) -> int:
    import shlex
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def usage() -> int:
        opts = options(args)
        opts.command = "python -m conformance " + shlex.join(argv)
        from encoder.imageio import image_paths
        images = image_paths(opts.images_dir)  # "no images" is a usage error
        if not args.shard.take(images, key=lambda p: p.name):
            raise UsageError(f"--shard {args.shard}: no images in this share ({len(images)} images in all)")
        from models.weights import load_registry
        load_registry(opts.registry)
        checked.append(opts)
        return 0
    checked: list = []
    if one_line_errors(PROG, usage, status=2):
        return 2
    return one_line_errors(PROG, lambda: _run(checked[0]))


def _run(opts) -> int:
    from conformance import report
    from conformance.suite import run
    results, meta = run(opts)
    pj, pm = report.write(opts.report_dir, meta, results)
    ok = all(r.passed for r in results)
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<12} {r.summary}")
        for f in r.failures[:5]:
            print(f"      - {f.where()}: {f.what}")
        if len(r.failures) > 5:
            print(f"      ... {len(r.failures) - 5} more in {pm}")
    print(f"conformance: {'PASS' if ok else 'FAIL'} ({meta['seconds']} s); report: {pm}, {pj}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
