"""What the three fuzz campaigns share on the command line: their common flags, declared once, the `--`
split for libFuzzer's own arguments, and the atheris instrumentation of the codec's Python."""

from __future__ import annotations

import argparse
import sys

from models.cli import ArgumentParser


def instrument(atheris) -> None:
    """Coverage for the codec's own Python (decoder.*, models.*) only: instrumenting TensorFlow would crawl."""
    import inspect
    seen = set()
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] not in ("decoder", "models") or mod is None:
            continue
        for obj in vars(mod).values():
            fns = [obj] if inspect.isfunction(obj) else (
                [f for f in vars(obj).values() if inspect.isfunction(f)] if inspect.isclass(obj) else [])
            for f in fns:
                if getattr(f, "__module__", "").split(".")[0] in ("decoder", "models") and id(f) not in seen:
                    seen.add(id(f))
                    atheris.instrument_func(f)


def passthrough(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(our arguments, the ones after `--`, which go to libFuzzer as they are)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def _shown(default) -> str:
    return f"{default:g}" if isinstance(default, float) else str(default)


def campaign_parser(prog: str, doc: str, *, out: tuple[str, str], mem_limit_gb: tuple[float, str],
                    seconds: tuple[float, str] | None = None, cases: tuple[int, str] | None = None,
                    subprocess: tuple[int, str] | None = None, registry: bool = True,
                    hang_s: float | None = None, progress: bool = True) -> argparse.ArgumentParser:
    """The parser of a fuzz campaign (conformance.fuzz.parse, .decode, .png) with the flags they
    share, each declared once here. A campaign gives its defaults, as (default, what the flag means there) where
    the meaning is its own; None or False leaves a flag out. The campaign then adds its own flags."""
    p = ArgumentParser(prog=f"python -m {prog}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, spec in (("--cases", int, cases), ("--seconds", float, seconds),
                             ("--subprocess", int, subprocess)):
        if spec is not None:
            p.add_argument(flag, type=kind, default=spec[0], help=f"{spec[1]} (default {_shown(spec[0])})")
    p.add_argument("--seed", type=int, default=0, help="random seed, for reproducible runs (default 0)")
    if registry:
        p.add_argument("--registry", default=None,
                       help="model registry YAML (default: $RATELOCK_REGISTRY or models/registry.yaml)")
    if hang_s is not None:
        p.add_argument("--hang-s", type=float, default=hang_s,
                       help=f"CPU seconds allowed per input (default {_shown(hang_s)})")
    p.add_argument("--mem-limit-gb", type=float, default=mem_limit_gb[0],
                   help=f"{mem_limit_gb[1]} (default {_shown(mem_limit_gb[0])})")
    p.add_argument("--out", default=out[0], help=f"{out[1]} (default {out[0]})")
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p
