"""Fuzz target for the decoder, for runs longer than the robustness check.

  python -m conformance.fuzz [--registry R] [--examples 2000] [--seed 0] [--out runs/fuzz-findings]
  python -m conformance.fuzz --engine atheris -- -max_total_time=600    # coverage-guided, if atheris is installed

Property, on the library API (decoder.decode.decode_bytes): every input either
decodes to an HxWx3 uint8 image of the header's size or raises DecodeError,
within --timeout seconds and under the RLIMIT_AS cap. MemoryError under the
cap is counted but allowed (the resource limit did its job).

Inputs are seed streams (encoded from a Kodak crop, or *.bit from --seeds)
mutated by hypothesis: bit flips, byte writes, truncation, insertion,
deletion, header fields at extremes; with or without a re-computed CRC.

A C++ op cannot be interrupted, so a watchdog thread ends the process when an
input runs past --timeout (+5 s): the input is saved first as
OUT/hang-<sha>.bit and the exit status is 3. A contract violation saves
OUT/fail-<sha>.bit and exits 1. Exit 0: no finding.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
PROG = "conformance.fuzz"


class Target:
    """The decoder under test plus the watchdog; shared by both engines."""

    def __init__(self, registry: str | None, out: Path, timeout: float):
        from decoder import decode as D
        self.D = D
        self.models = D.ModelCache(registry)
        self.out, self.timeout = out, timeout
        self.current: bytes | None = None
        self.started = 0.0
        self.runs = self.rejected = self.decoded = self.memory = 0
        threading.Thread(target=self._watch, daemon=True).start()

    def _save(self, prefix: str, data: bytes) -> Path:
        from conformance.common import sha16
        self.out.mkdir(parents=True, exist_ok=True)
        p = self.out / f"{prefix}-{sha16(data)}.bit"
        p.write_bytes(data)
        return p

    def _watch(self) -> None:
        while True:
            time.sleep(0.5)
            cur, t0 = self.current, self.started
            if cur is not None and time.monotonic() - t0 > self.timeout + 5:
                p = self._save("hang", cur)
                print(f"{PROG}: HANG: input ran past {self.timeout:.0f} s; saved {p}", file=sys.stderr, flush=True)
                os._exit(3)

    def __call__(self, data: bytes) -> None:
        """Raise AssertionError when the contract is broken; the input is saved first."""
        D = self.D
        self.runs += 1
        self.started, self.current = time.monotonic(), data
        try:
            rgb = D.decode_bytes(data, self.models)
        except D.DecodeError:
            self.rejected += 1
            return
        except MemoryError:
            self.memory += 1
            return
        except Exception as e:  # noqa: BLE001 - this is the finding
            p = self._save("fail", data)
            raise AssertionError(f"decode_bytes raised {type(e).__name__} (not DecodeError): "
                                 f"{str(e).splitlines()[0] if str(e) else ''}; input saved as {p}") from None
        finally:
            self.current = None
        from decoder.bitstream import parse_header
        h = parse_header(data)
        if rgb.dtype.name != "uint8" or rgb.shape != (h.height, h.width, 3):
            p = self._save("fail", data)
            raise AssertionError(f"decoded image has shape {rgb.shape} {rgb.dtype}, header says "
                                 f"{h.height}x{h.width}; input saved as {p}")
        self.decoded += 1


def seed_streams(registry: str | None, seeds_dir: str | None) -> list[bytes]:
    """*.bit from seeds_dir, or small streams encoded from a Kodak crop (each model, two step sizes)."""
    if seeds_dir:
        out = [p.read_bytes() for p in sorted(Path(seeds_dir).glob("*.bit"))]
        if not out:
            raise ValueError(f"{seeds_dir}: no .bit seed streams")
        return out
    import numpy as np

    from conformance.common import KODAK
    from encoder.api import Encoder
    from encoder.imageio import load_rgb8
    rgb = np.ascontiguousarray(load_rgb8(KODAK / "kodim23.png")[100:164, 240:336])
    enc = Encoder(registry)
    out = []
    for k in range(len(enc.models.distinct_entries())):
        out += [enc.encode_fixed(rgb, k, 128), enc.encode_fixed(rgb[:9, :13], k, 170)]
    return out


def mutation_strategy(seeds: list[bytes]):
    """A hypothesis strategy of mutated streams."""
    from hypothesis import strategies as st

    from conformance import mutate
    from decoder import bitstream as B

    def apply(args) -> bytes:
        base, ops, fix = args
        d = bytearray(base)
        for op, a, b in ops:
            if not d and op != "insert":
                break
            i = a % max(len(d), 1)
            if op == "flip":
                d[i] ^= 1 << (b % 8)
            elif op == "set":
                d[i] = b % 256
            elif op == "truncate":
                del d[i:]
            elif op == "insert":
                d[i:i] = bytes([b % 256]) * (1 + b % 7)
            elif op == "delete":
                del d[i:i + 1 + b % 7]
            elif op == "field" and len(d) >= B.FIXED:
                pos = (2, 4, 6, 1, 8)[a % 5]           # hash, width, height, version/target, delta
                width = 1 if pos in (1, 8) else 2
                extreme = (0, 0xFF, 0xFFFF, b)[b % 4] & ((1 << (8 * width)) - 1)
                d[pos:pos + width] = extreme.to_bytes(width, "big")
        out = bytes(d)
        return mutate.crc_fix(out) if fix and len(out) >= B.TRAILER else out

    op = st.tuples(st.sampled_from(("flip", "set", "truncate", "insert", "delete", "field")),
                   st.integers(0, 1 << 20), st.integers(0, 1 << 16))
    return st.tuples(st.sampled_from(seeds), st.lists(op, min_size=1, max_size=6), st.booleans()).map(apply) | \
        st.binary(max_size=256)


def run_hypothesis(target: Target, seeds: list[bytes], examples: int, seed: int) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(mutation_strategy(seeds))
    def prop(data: bytes) -> None:
        target(data)

    try:
        prop()
    except AssertionError as e:
        print(f"{PROG}: FAIL: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def run_atheris(target: Target, seeds: list[bytes], libfuzzer_args: list[str], out: Path) -> int:
    import atheris

    from conformance import mutate
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds):
        (corpus / f"seed{i}.bin").write_bytes(b"\x01" + s)

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        fix = fdp.ConsumeBool()
        stream = fdp.ConsumeBytes(fdp.remaining_bytes())
        target(mutate.crc_fix(stream) if fix and len(stream) >= 4 else stream)

    _instrument(atheris)
    atheris.Setup([sys.argv[0], str(corpus), *libfuzzer_args], one)
    atheris.Fuzz()
    return 0


def _instrument(atheris) -> None:
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
    """The parser of a fuzz campaign (conformance.fuzz, fuzz_parse, fuzz_decode, fuzz_png) with the flags they
    share, each declared once here. A campaign gives its defaults, as (default, what the flag means there) where
    the meaning is its own; None or False leaves a flag out. The campaign then adds its own flags."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc,
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


def main(argv: list[str] | None = None) -> int:
    argv, extra = passthrough(argv)
    p = campaign_parser(PROG, __doc__, out=("runs/fuzz-findings", "where failing and hanging inputs (and the "
                                            "atheris corpus) go"),
                        mem_limit_gb=(4.0, "RLIMIT_AS for this process, 0 = none"), progress=False)
    p.add_argument("--engine", choices=("hypothesis", "atheris"), default="hypothesis",
                   help="hypothesis (default, pinned in requirements.txt) or atheris (coverage-guided, optional)")
    p.add_argument("--examples", type=int, default=2000, help="hypothesis: number of inputs (default 2000)")
    p.add_argument("--seeds", default=None, help="folder of *.bit seed streams (default: encode a Kodak crop)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds allowed per input (default 20)")
    args = p.parse_args(argv)
    try:
        from conformance.worker import set_memory_limit
        set_memory_limit(args.mem_limit_gb)
        from models.runtime import configure
        configure()
        seeds = seed_streams(args.registry, args.seeds)
        target = Target(args.registry, Path(args.out), args.timeout)
        t0 = time.perf_counter()
        if args.engine == "atheris":
            return run_atheris(target, seeds, extra, Path(args.out))
        rc = run_hypothesis(target, seeds, args.examples, args.seed)
    except Exception as e:  # noqa: BLE001 - one line
        print(f"{PROG}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(f"{PROG}: {target.runs} inputs in {time.perf_counter() - t0:.1f} s: {target.decoded} decoded, "
          f"{target.rejected} rejected (DecodeError), {target.memory} MemoryError under the cap; "
          f"{'no finding' if rc == 0 else 'FINDING saved under ' + args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
