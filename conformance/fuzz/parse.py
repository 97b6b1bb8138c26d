"""Coverage-guided fuzzing of the decoder's PARSE path: header, CRC, z/y range decoding, escapes, integer hyper path.

  python -m conformance.fuzz.parse --seconds 600                  # atheris (libFuzzer) campaign, then a summary
  python -m conformance.fuzz.parse --seconds 600 --engine random  # same target, seeded random mutations
  python -m conformance.fuzz.parse --replay conformance/fuzz_corpus/parse

Why only the parse: the float synthesis is ~50x the cost of the parse and takes no
decision from the stream beyond the parsed integers, so leaving it out buys the
execution rate a coverage-guided search needs (conformance.fuzz.decode covers it).

Property, per input: `decoder.decode.parse` either returns z_hat, scale indexes and
symbols of exactly the shapes the header implies, or raises DecodeError; nothing
else escapes; no input costs more than --hang-s CPU seconds; the traced (numpy and
Python) allocation peak stays under the decoder's own bound `estimated_peak_bytes`
for the header's size. A true infinite loop in C++ is caught by libFuzzer's -timeout
(or the watchdog of the random engine); RLIMIT_AS caps the process.

Input format (the committed corpus uses it): byte 0 is a flag byte, bit 0 set means
"re-compute the CRC-32 trailer" so that mutations get past the CRC and reach the
range decoder; the rest is the stream.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conformance.fuzz.mutate import GOLDEN, mutate_stream, registry_hashes, seeds  # noqa: F401 - the harness's inputs
from models.cli import one_line_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")   # one core per fuzzer: CPU time then measures the input, not the scheduler

PROG = "conformance.fuzz.parse"
ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "conformance" / "fuzz_corpus" / "parse"
FUZZ_MAX_PIXELS = 1 << 15     # the decoder's --max-pixels during a campaign (W x H, as the decoder counts it)
FUZZ_MAX_PADDED = 1 << 16     # and at most this many pixels once padded to 64: 256x256, or 64x1024 (one intnet
                              # band plus halo); work scales with the padded size, up to 64x W x H (1-px-wide images)
HANG_S = 1.0
TRACE_FLOOR = 1 << 20         # bound for inputs whose header does not parse: 1 MiB + 4 x input


class Finding(AssertionError):
    """A broken contract; `kind` is crash, hang, over-bound or shape."""

    def __init__(self, kind: str, msg: str):
        super().__init__(f"{kind}: {msg}")
        self.kind = kind


@dataclass
class Stats:
    runs: int = 0
    skipped: int = 0                                 # headers over the campaign's padded-size cap: not run
    parsed: int = 0
    rejected: int = 0
    outcomes: dict = field(default_factory=dict)   # first words of each DecodeError, counted
    max_cpu_s: float = 0.0
    max_peak_ratio: float = 0.0                      # traced peak / bound, worst input
    max_peak_mb: float = 0.0                         # largest traced peak of any input
    traced_now_mb: float = 0.0                       # tracemalloc's live total at the last write (leak watch)
    rss_mb: float = 0.0                              # this process's peak RSS at the last write
    findings: dict = field(default_factory=dict)
    seconds: float = 0.0


def to_stream(data: bytes) -> bytes:
    """Harness input -> stream: byte 0 bit 0 asks for the CRC to be re-computed."""
    from conformance.fuzz.mutate import crc_fix
    if not data:
        return b""
    stream = data[1:]
    return crc_fix(stream) if data[0] & 1 and len(stream) >= 4 else stream


def outcome_key(msg: str) -> str:
    """A DecodeError message without its numbers, e.g. 'corrupt stream: range decoder did not end'."""
    words = [w for w in msg.replace(",", " ").split()
             if not any(c.isdigit() for c in w) and not (len(w) == 4 and all(c in "0123456789abcdef" for c in w))]
    return " ".join(words[:6])


class ParseTarget:
    """decoder.decode.parse under the property above; call it with harness inputs."""

    def __init__(self, registry: str | None = None, max_pixels: int = FUZZ_MAX_PIXELS, hang_s: float = HANG_S,
                 trace: bool = True, max_padded: int = FUZZ_MAX_PADDED):
        from decoder import decode as D
        self.D = D
        self.models = D.ModelCache(registry)
        self.limits = D.Limits(max_pixels=max_pixels)
        self.hang_s = hang_s
        self.max_padded = max_padded
        self.stats = Stats()
        self.trace = trace
        self._warm(registry)
        if trace and not tracemalloc.is_tracing():
            tracemalloc.start()

    def _warm(self, registry: str | None) -> None:
        """Load every registered model now: a first load (~1 s) inside an input would read as a hang."""
        from decoder.bitstream import Header
        for t, h16 in registry_hashes(registry):
            self.models.get(Header(t, h16, 1, 1, 128))

    def bound(self, stream: bytes) -> int:
        """Header-derived allocation bound: the decoder's estimated_peak_bytes for the header's size."""
        from decoder.bitstream import BitstreamError, parse_header
        try:
            h = parse_header(stream)
        except BitstreamError:
            return TRACE_FLOOR + 4 * len(stream)
        if h.width * h.height > self.limits.max_pixels:
            return TRACE_FLOOR + 4 * len(stream)
        return self.D.estimated_peak_bytes(h.width, h.height) + TRACE_FLOOR + 4 * len(stream)

    def too_big(self, stream: bytes) -> bool:
        """Whether the header asks for more than max_padded pixels after padding (the campaign skips those)."""
        from decoder.bitstream import BitstreamError, parse_header
        try:
            h = parse_header(stream)
        except BitstreamError:
            return False
        return -(-h.width // 64) * -(-h.height // 64) * 4096 > self.max_padded

    def __call__(self, data: bytes) -> str:
        """Run one input; returns 'parsed' or the rejection's outcome key; raises Finding."""
        D, st = self.D, self.stats
        stream = to_stream(data)
        if self.max_padded and self.too_big(stream):
            st.skipped += 1
            return "skipped"
        st.runs += 1
        if self.trace:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        c0 = time.process_time()
        parsed, key = None, "parsed"
        try:
            parsed = D.parse(stream, self.models, self.limits)
        except D.DecodeError as e:
            key = outcome_key(str(e))
        except Exception as e:  # noqa: BLE001 - this is the finding
            raise Finding("crash", f"parse raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        cpu = time.process_time() - c0
        st.max_cpu_s = max(st.max_cpu_s, cpu)
        if cpu > self.hang_s:
            raise Finding("hang", f"parse took {cpu:.2f} CPU s (limit {self.hang_s} s)")
        if self.trace:
            peak = tracemalloc.get_traced_memory()[1] - base
            bound = self.bound(stream)
            st.max_peak_ratio = max(st.max_peak_ratio, peak / bound)
            st.max_peak_mb = max(st.max_peak_mb, peak / 2**20)
            if peak > bound:
                raise Finding("over-bound", f"traced peak {peak} B above the header's bound {bound} B")
        if parsed is None:
            st.rejected += 1
        else:
            self._check_shapes(parsed)
            st.parsed += 1
        st.outcomes[key] = st.outcomes.get(key, 0) + 1
        return key

    def _check_shapes(self, p) -> None:
        h = p.header
        m = self.models.get(h)
        y_shape, z_shape = self.D.latent_shapes(h.width, h.height, m.widths["latent_channels"],
                                                m.widths["num_filters"])
        got = (tuple(p.z_hat.shape), tuple(p.symbols.shape), tuple(p.scale_idx.shape), tuple(p.mu_q.shape))
        yq = getattr(p, "y_hat_q", None)                      # bitstream v3: the decoded latents in Q8
        if yq is not None:
            got += (tuple(yq.shape),)
        if got[:4] != (z_shape, y_shape, y_shape, y_shape) or got[4:] not in ((), (y_shape,)) \
                or p.symbols.dtype.name != "int32":
            raise Finding("shape", f"parsed shapes {got} {p.symbols.dtype}, header implies z {z_shape}, y {y_shape}")


# -- engines ---------------------------------------------------------------------------------------------
def _write_stats(path: Path | None, st: Stats, t0: float) -> None:
    if path is None:
        return
    st.seconds = round(time.monotonic() - t0, 2)
    if tracemalloc.is_tracing():
        st.traced_now_mb = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
    st.rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(st)))
    os.replace(tmp, path)


def _feature(key: str) -> None:
    """A distinct branch per outcome, so that libFuzzer counts reaching a new rejection as new coverage.

    The C++ range coder is not instrumented; its verdicts reach the coverage map only this way.
    """
    h = sum(key.encode()) % 16
    if h == 0: pass          # noqa: E701 - sixteen edges, one per bucket
    elif h == 1: pass        # noqa: E701
    elif h == 2: pass        # noqa: E701
    elif h == 3: pass        # noqa: E701
    elif h == 4: pass        # noqa: E701
    elif h == 5: pass        # noqa: E701
    elif h == 6: pass        # noqa: E701
    elif h == 7: pass        # noqa: E701
    elif h == 8: pass        # noqa: E701
    elif h == 9: pass        # noqa: E701
    elif h == 10: pass       # noqa: E701
    elif h == 11: pass       # noqa: E701
    elif h == 12: pass       # noqa: E701
    elif h == 13: pass       # noqa: E701
    elif h == 14: pass       # noqa: E701
    else: pass               # noqa: E701


def run_atheris_child(target: ParseTarget, corpus_dirs: list[Path], out: Path, stats_path: Path,
                      libfuzzer_args: list[str]) -> None:
    """In-process libFuzzer loop (never returns: libFuzzer exits the process)."""
    import atheris

    from conformance.fuzz.campaign import instrument as _instrument
    t0 = time.monotonic()
    last = [0.0]

    def one(data: bytes) -> None:
        try:
            _feature(target(data))
        except Finding as f:
            target.stats.findings[f.kind] = target.stats.findings.get(f.kind, 0) + 1
            _write_stats(stats_path, target.stats, t0)
            raise
        now = time.monotonic()
        if now - last[0] > 1.0:
            last[0] = now
            _write_stats(stats_path, target.stats, t0)

    _instrument(atheris)
    atheris.instrument_func(_feature)
    out.mkdir(parents=True, exist_ok=True)
    # libFuzzer re-runs argv[0] for -merge (and passes it its own flags): give it an executable that is this child.
    argv0 = out / "child.sh"
    argv0.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m conformance.fuzz.parse --child --out "{out}" '
                     f'--max-pixels {target.limits.max_pixels} --max-padded {target.max_padded} '
                     f'--hang-s {target.hang_s} -- "$@"\n')
    argv0.chmod(0o755)
    atheris.Setup([str(argv0), *map(str, corpus_dirs), f"-artifact_prefix={out}/", *libfuzzer_args], one)
    atheris.Fuzz()


def run_random(target: ParseTarget, inputs: list[bytes], seconds: float, runs: int, seed: int, out: Path,
               stats_path: Path | None, progress: bool = True, registry: str | None = None) -> int:
    """Seeded stream-aware mutations of the seeds and corpus; a watchdog ends the process on a stuck C++ op."""
    rng = random.Random(seed)
    hashes = registry_hashes(registry)
    t0 = time.monotonic()
    current: list = [None, 0.0]

    def watch() -> None:
        while True:
            time.sleep(0.5)
            cur, ts = current
            if cur is not None and time.monotonic() - ts > 10:
                out.mkdir(parents=True, exist_ok=True)
                p = out / f"timeout-{_sha(cur)}"
                p.write_bytes(cur)
                print(f"{PROG}: HANG: input stuck for 10 s; saved {p}", file=sys.stderr, flush=True)
                os._exit(3)
    threading.Thread(target=watch, daemon=True).start()
    from tqdm import tqdm
    bar = tqdm(total=int(seconds) if seconds else runs, unit="s" if seconds else "input", disable=not progress,
               desc="parse fuzz", file=sys.stderr)
    done_s, last = 0, t0
    while True:
        now = time.monotonic()
        if (seconds and now - t0 >= seconds) or (runs and target.stats.runs >= runs):
            break
        a, b = rng.choice(inputs), rng.choice(inputs)
        data = bytes([1]) + mutate_stream(rng, a[1:], b[1:], hashes) if rng.random() < 0.97 else rng.randbytes(
            rng.randrange(64))
        current[:] = [data, time.monotonic()]
        try:
            target(data)
        except Finding as f:
            out.mkdir(parents=True, exist_ok=True)
            p = out / f"{f.kind}-{_sha(data)}"
            p.write_bytes(data)
            target.stats.findings[f.kind] = target.stats.findings.get(f.kind, 0) + 1
            print(f"{PROG}: FINDING {f}; input saved as {p}", file=sys.stderr, flush=True)
        current[0] = None
        if seconds:
            if int(now - t0) > done_s:
                bar.update(int(now - t0) - done_s)
                done_s = int(now - t0)
        else:
            bar.update(1)
        if now - last > 2:
            last = now
            bar.set_postfix(exec_s=f"{target.stats.runs / max(now - t0, 1e-9):.0f}", runs=target.stats.runs)
            _write_stats(stats_path, target.stats, t0)
    bar.close()
    _write_stats(stats_path, target.stats, t0)
    return 1 if target.stats.findings else 0


def _sha(data: bytes) -> str:
    from conformance.common import sha16
    return sha16(data)


def replay(target: ParseTarget, corpus: Path) -> list[tuple[str, str]]:
    """Run every file of a corpus folder; returns (file, finding) pairs, empty when all keep the contract."""
    bad = []
    for p in sorted(corpus.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            try:
                target(p.read_bytes())
            except Finding as f:
                bad.append((p.name, str(f)))
    return bad


def summary(st: dict, engine: str) -> str:
    s = max(st["seconds"], 1e-9)
    f = st["findings"]
    return (f"{PROG}: {engine}: {st['runs']} executions in {st['seconds']:.0f} s ({st['runs'] / s:.0f} exec/s): "
            f"{st['parsed']} parsed to symbols, {st['rejected']} rejected (DecodeError); "
            f"crashes {f.get('crash', 0) + f.get('shape', 0)}, hangs {f.get('hang', 0) + f.get('timeout', 0)}, "
            f"over-bound {f.get('over-bound', 0)}; max CPU {st['max_cpu_s'] * 1000:.0f} ms/input, "
            f"largest traced peak {st.get('max_peak_mb', 0):.1f} MiB, "
            f"worst {100 * st['max_peak_ratio']:.2f} % of its bound; "
            f"{st.get('skipped', 0)} inputs over the campaign's padded-size cap not run (not counted)")


SEGMENT_S = 900   # the libFuzzer child's RSS grows (0.9 -> 3.2 GB over 1.37 M executions in one 31-min run), so a
                  # long campaign runs as segments of this length, each resuming from the working corpus


def _accumulate(total: dict, st: dict) -> dict:
    """Add one segment's statistics to the campaign's."""
    if not total:
        return json.loads(json.dumps(st))
    for k in ("runs", "skipped", "parsed", "rejected", "seconds"):
        total[k] = total.get(k, 0) + st.get(k, 0)
    for k in ("max_cpu_s", "max_peak_ratio", "max_peak_mb", "traced_now_mb", "rss_mb"):
        total[k] = max(total.get(k, 0), st.get(k, 0))
    for k in ("outcomes", "findings"):
        for kk, v in st.get(k, {}).items():
            total[k][kk] = total[k].get(kk, 0) + v
    return total


def _drive_atheris(args, extra: list[str]) -> int:
    """Run the libFuzzer child in segments with a progress bar; collect its stats and artifacts."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "corpus"
    work.mkdir(exist_ok=True)
    stats_path = out / "stats.json"
    seed_dir = out / "seeds"
    seed_dir.mkdir(exist_ok=True)
    for i, s in enumerate(seeds(Path(args.seeds))):
        (seed_dir / f"golden{i}").write_bytes(s)
    dirs = [str(work), str(seed_dir)] + ([str(CORPUS)] if CORPUS.is_dir() and not args.no_corpus else [])
    log = out / "libfuzzer.log"
    log.write_text("")
    from tqdm import tqdm
    t0 = time.monotonic()
    total: dict = {}
    rcs, segments = [], 0
    bar = tqdm(total=int(args.seconds), unit="s", desc="parse fuzz (atheris)", file=sys.stderr,
               disable=args.no_progress)
    while True:
        left = args.seconds - (time.monotonic() - t0)
        if left < 5 or (segments and (total.get("findings") or rcs[-1] != 0)):
            break
        stats_path.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "conformance.fuzz.parse", "--child", "--out", str(out),
               "--max-pixels", str(args.max_pixels), "--max-padded", str(args.max_padded), "--hang-s",
               str(args.hang_s), "--mem-limit-gb", str(args.mem_limit_gb),
               *(["--registry", args.registry] if args.registry else []), "--",
               *dirs, f"-max_total_time={int(min(left, args.segment_s))}", "-timeout=10", "-rss_limit_mb=0",
               "-max_len=4096", "-print_final_stats=1", *extra]
        with open(log, "a") as lf:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                time.sleep(1)
                bar.n = min(int(time.monotonic() - t0), int(args.seconds))
                try:
                    st = _accumulate(json.loads(json.dumps(total)), json.loads(stats_path.read_text()))
                    bar.set_postfix(runs=st["runs"], exec_s=f"{st['runs'] / max(st['seconds'], 1e-9):.0f}")
                except (OSError, ValueError, KeyError):
                    pass
                bar.refresh()
        rcs.append(proc.returncode)
        segments += 1
        try:
            total = _accumulate(total, json.loads(stats_path.read_text()))
        except (OSError, ValueError):
            print(f"{PROG}: error: the fuzzer wrote no statistics; see {log}", file=sys.stderr)
            return 2
    bar.close()
    st = total
    arts = sorted(p.name for p in out.iterdir() if p.name.split("-")[0] in ("crash", "timeout", "oom", "leak"))
    if any(a.startswith("timeout") for a in arts):
        st["findings"]["timeout"] = st["findings"].get("timeout", 0) + 1
    if any(a.startswith(("crash", "oom")) for a in arts) and not st["findings"]:
        st["findings"]["crash"] = 1
    units = [int(line.split()[-1]) for line in log.read_text(errors="replace").splitlines()
             if line.startswith("stat::number_of_executed_units")]
    peaks = [int(line.split()[-1]) for line in log.read_text(errors="replace").splitlines()
             if line.startswith("stat::peak_rss_mb")]
    print(f"{PROG}: libFuzzer: {segments} segment(s), {sum(units)} units executed (skipped ones included), "
          f"peak RSS {max(peaks, default=0)} MB")
    print(summary(st, "atheris"))
    print(f"{PROG}: outcomes: " + "; ".join(f"{k or 'parsed'} {v}" for k, v in
                                          sorted(st["outcomes"].items(), key=lambda kv: -kv[1])))
    print(f"{PROG}: corpus {len(list(work.iterdir()))} inputs in {work}; libFuzzer log {log}"
          + (f"; FINDINGS: {', '.join(arts)} under {out}" if arts else ""))
    (out / "summary.json").write_text(json.dumps(st, indent=1))
    return 1 if st["findings"] or arts or any(rcs) else 0


def merge(into: Path, sources: list[Path], max_bytes: int = 2 << 20, registry: str | None = None) -> int:
    """libFuzzer -merge=1 of `into` and sources into a fresh folder (the smallest set with their coverage),
    which then replaces `into`. Refuses a result over max_bytes (the committed corpus stays small)."""
    import shutil
    fresh = into.parent / f".{into.name}.merge"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    srcs = [str(d) for d in [into, *sources] if d.is_dir()]
    r = subprocess.run([sys.executable, "-m", "conformance.fuzz.parse", "--child", "--out", str(fresh) + ".out",
                        *(["--registry", registry] if registry else []), "--", "-merge=1", "-max_len=4096",
                        str(fresh), *srcs], cwd=ROOT, capture_output=True, text=True)
    shutil.rmtree(str(fresh) + ".out", ignore_errors=True)
    files = list(fresh.iterdir())
    total = sum(p.stat().st_size for p in files)
    if r.returncode != 0 or not files or total > max_bytes:
        shutil.rmtree(fresh, ignore_errors=True)
        raise RuntimeError(f"merge failed (exit {r.returncode}, {len(files)} files, {total} B): {r.stderr[-300:]}")
    added = _one_per_outcome(fresh, [Path(d) for d in srcs], registry)
    shutil.rmtree(into, ignore_errors=True)
    fresh.rename(into)
    print(f"{PROG}: merged corpus: {len(files)} inputs by coverage + {added} for outcomes they missed, "
          f"{total} B in {into}")
    return 0


def _one_per_outcome(kept: Path, sources: list[Path], registry: str | None) -> int:
    """Add the smallest source input of every outcome the merged set does not reach.

    libFuzzer sees the C++ range coder's verdicts only through 16 hashed branches (_feature), so a merge
    can drop, e.g., the only input that reaches the slice-escape limit; the replay test wants every stage.
    """
    from models.runtime import configure
    try:
        configure(1)
    except RuntimeError:
        pass
    target = ParseTarget(registry, trace=False)

    def outcomes(files: list[Path]) -> dict[str, Path]:
        best: dict[str, Path] = {}
        for p in sorted(files, key=lambda p: (p.stat().st_size, p.name)):
            try:
                key = target(p.read_bytes())
            except Finding:
                continue
            best.setdefault(key, p)
        return best

    have = outcomes([p for p in kept.iterdir() if p.is_file()])
    added = 0
    for key, p in outcomes([p for d in sources for p in d.iterdir() if p.is_file()]).items():
        if key not in have and key != "skipped":
            shutil_copy(p, kept / p.name)
            added += 1
    return added


def shutil_copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    from conformance.fuzz.campaign import campaign_parser, passthrough
    argv, extra = passthrough(argv)
    p = campaign_parser(PROG, __doc__, seconds=(600, "time budget in seconds"), hang_s=HANG_S,
                        mem_limit_gb=(6.0, "RLIMIT_AS, 0 = none"),
                        out=("runs/fuzz-parse", "findings, working corpus, stats"))
    p.add_argument("--engine", choices=("atheris", "random"), default="atheris")
    p.add_argument("--runs", type=int, default=0, help="random engine: stop after this many inputs (0 = use --seconds)")
    p.add_argument("--seeds", default=str(GOLDEN),
                   help="folder of *.bit seed streams made with that registry (default conformance/streams; "
                        "tests/expected/charm with its registry.yaml for bitstream v3)")
    p.add_argument("--max-pixels", type=int, default=FUZZ_MAX_PIXELS,
                   help=f"decoder pixel limit during the campaign (default {FUZZ_MAX_PIXELS}: keeps inputs fast)")
    p.add_argument("--max-padded", type=int, default=FUZZ_MAX_PADDED,
                   help=f"skip headers over this many pixels once padded to 64 (default {FUZZ_MAX_PADDED}, 0 = none)")
    p.add_argument("--segment-s", type=float, default=SEGMENT_S,
                   help=f"atheris: restart the libFuzzer child this often, resuming its corpus (default {SEGMENT_S})")
    p.add_argument("--replay", default=None, help="run every input of this folder once and report")
    p.add_argument("--merge-into", default=None, help="after the campaign, merge the working corpus into this folder")
    p.add_argument("--no-corpus", action="store_true", help="do not start from the committed corpus")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from conformance.children.worker import set_memory_limit
    set_memory_limit(args.mem_limit_gb)
    if args.engine == "atheris" and not args.child and not args.replay:
        try:
            import atheris  # noqa: F401
        except ImportError:
            print(f"{PROG}: atheris is not installed (pip install -r requirements.txt); using --engine random",
                  file=sys.stderr)
            args.engine = "random"
        else:
            rc = _drive_atheris(args, extra)
            if args.merge_into:
                merge(Path(args.merge_into), [Path(args.out) / "corpus"], registry=args.registry)
            return rc
    from models.runtime import configure
    configure(1)
    target = ParseTarget(args.registry, args.max_pixels, args.hang_s, max_padded=args.max_padded)
    if args.child:
        out = Path(args.out)
        run_atheris_child(target, [], out, out / "stats.json", extra)
        return 0
    if args.replay:
        t0 = time.monotonic()
        bad = replay(target, Path(args.replay))
        st = asdict(target.stats)
        st["seconds"] = time.monotonic() - t0
        print(summary(st, "replay"))
        for name, msg in bad:
            print(f"{PROG}: {name}: {msg}", file=sys.stderr)
        return 1 if bad else 0
    inputs = seeds(Path(args.seeds)) + ([p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file()]
                        if CORPUS.is_dir() and not args.no_corpus else [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rc = run_random(target, inputs, args.seconds if not args.runs else 0, args.runs, args.seed, out,
                    out / "stats.json", not args.no_progress, args.registry)
    print(summary(asdict(target.stats), "random"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
