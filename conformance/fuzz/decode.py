"""Full-decode campaign through the decoder's CLI entry point, on mutated streams.

  python -m conformance.fuzz.decode --cases 10000 --subprocess 40 [--seed 0] [--out runs/fuzz-decode]

Why two layers: one `decoder/decode.sh` call costs ~5 s of start-up on a 2-core
machine, so 10^4 real processes would take 14 hours. The bulk runs in-process
through the very function the CLI runs (`decoder.__main__.main(argv)`, the
robustness worker's `run_case`: stdout/stderr captured, SIGALRM timeout, models
shared); a sample of the same inputs runs through `decoder/decode.sh` itself
under `ulimit -v`, where peak RSS is that process's own.

Contract per case: exit 0 with a PNG of the header's size, or a non-zero exit
with exactly one stderr line `<the CLI's PROG>: ...`; never a traceback, an
exception out of main(), a hang (--timeout), a partial or temporary file in the
output folder; peak RSS at most the RSS before the stream plus the decoder's
`estimated_peak_bytes` for the header (in-process: checked whenever the
process's peak rises, from the RSS just before that stream; subprocess: the
child's own peak against the bound plus the RSS of decoding the smallest golden
stream).

Inputs: the structured cases of conformance.fuzz.mutate (every header field at its
extremes, truncations, z lengths: with their reject/decode expectations), the
parse fuzzer's corpus, and stream-aware random mutations of the golden streams
(CRC re-computed 85 % of the time, so most reach the range decoder and many the
synthesis). `--max-pixels` (default 2^18) is passed to the CLI so that a mutated
header cannot ask for minutes of synthesis; huge headers are the robustness
check's g-huge cases.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models.cli import one_line_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

PROG = "conformance.fuzz.decode"
ROOT = Path(__file__).resolve().parents[2]
MAX_PIXELS = 1 << 18


@dataclass
class Tally:
    cases: int = 0
    decoded: int = 0
    rejected: int = 0
    failures: list = field(default_factory=list)     # {"id", "what", "detail"}
    max_seconds: float = 0.0
    baseline_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    worst_rss_ratio: float = 0.0                     # (peak - baseline) / header bound, worst new peak
    seconds: float = 0.0


def maxrss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc), the base a case's own peak is measured from."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def header_bound(data: bytes, max_pixels: int) -> int:
    """The decoder's estimated_peak_bytes for the header's size; 64 MiB when the header is refused."""
    from decoder.bitstream import BitstreamError, parse_header
    from decoder.decode import estimated_peak_bytes
    try:
        h = parse_header(data)
    except BitstreamError:
        return 64 << 20
    if h.width * h.height > max_pixels:
        return 64 << 20
    return estimated_peak_bytes(h.width, h.height) + (64 << 20)


def check_result(rc, stderr: str, escaped, timed_out: bool, out_dir: Path, dst: Path, data: bytes,
                 expect: str = "either") -> str | None:
    """What broke the CLI contract, or None. Shared by the in-process and the subprocess runs."""
    if timed_out:
        return "hang"
    if escaped:
        return f"exception out of main(): {escaped}"
    if "Traceback" in stderr:
        return "traceback on stderr"
    left = sorted(p.name for p in out_dir.iterdir())
    if rc == 0:
        if expect == "reject":
            return "decoded a stream that must be rejected"
        if left != [dst.name]:
            return f"exit 0 but output folder holds {left}"
        from PIL import Image

        from decoder.bitstream import parse_header
        h = parse_header(data)
        try:
            with Image.open(dst) as im:
                im.load()
                size, mode = im.size, im.mode
        except Exception as e:  # noqa: BLE001
            return f"exit 0 but the PNG does not read: {e}"
        if size != (h.width, h.height) or mode != "RGB":
            return f"PNG is {size} {mode}, header says {h.width}x{h.height}"
        return None
    from decoder.__main__ import PROG as CLI  # the name the CLI puts before its one error line
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if len(lines) != 1 or not lines[0].startswith(f"{CLI}: "):
        return f"exit {rc} with {len(lines)} stderr lines: {stderr[:300]!r}"
    if left:
        return f"exit {rc} but left {left} in the output folder"
    if expect == "decode":
        return f"refused a valid stream: {lines[0]}"
    return None


def build_cases(n: int, seed: int, registry: str | None, corpus: Path | None) -> list[tuple[str, bytes, str]]:
    """(id, stream, expectation) x n: structured cases first, then corpus inputs, then random mutations."""
    from conformance.fuzz import mutate
    from conformance.fuzz.mutate import mutate_stream, registry_hashes, seeds
    from conformance.fuzz.parse import CORPUS, to_stream
    golden = [s[1:] for s in seeds()]
    hashes = registry_hashes(registry)
    rng = random.Random(seed)
    fixed = mutate.garbage(dict(hashes), rng, MAX_PIXELS)
    for bi in sorted({0, len(golden) - 1}):      # two bases suffice: the field extremes do not depend on the model
        fixed += mutate.structured(bi, golden[bi], dict(hashes), MAX_PIXELS)
    cases = [(c.id, c.data, c.expect) for c in fixed]
    cdir = corpus or CORPUS
    extra = [to_stream(p.read_bytes()) for p in sorted(cdir.iterdir()) if p.is_file()] if cdir.is_dir() else []
    cases += [(f"corpus{i:04d}", s, "either") for i, s in enumerate(extra)]
    i = 0
    pool = golden + extra
    while len(cases) < n:
        a, b = rng.choice(pool), rng.choice(golden)
        cases.append((f"m{i:06d}", mutate_stream(rng, a, b, hashes), "either"))
        i += 1
    return cases[:n]


def _share_models() -> None:
    """One ModelCache per (registry, options) for the whole campaign: a model loads once, not once per case.

    Like conformance.children.worker's, but passing through whatever keywords the CLI gives (it now passes backend=).
    """
    from decoder import decode as D
    original, shared = D.ModelCache, {}

    def cached(*args, **kw):
        key = repr((args, sorted(kw.items())))
        if key not in shared:
            shared[key] = original(*args, **kw)
        return shared[key]
    D.ModelCache = cached


def run_inprocess(cases, work: Path, max_pixels: int, timeout: float, registry: str | None,
                  progress: bool, failures_dir: Path, warm: int | None = None) -> Tally:
    """Every case through decoder.__main__.main(argv), in this process (the first `warm` golden streams,
    default all, are decoded first so that model loading is not counted against any case's memory)."""
    from conformance.children import worker
    from models.runtime import configure
    try:
        configure(1)                               # one TF thread: the other core is someone else's
    except RuntimeError:
        pass                                       # TensorFlow already running (under pytest): keep its threads
    _share_models()
    signal.signal(signal.SIGALRM, worker._alarm)
    fn = worker.load_callable("decoder.__main__:main")
    from conformance.fuzz.mutate import seeds
    reg = ["--registry", registry] if registry else []
    src, out_dir = work / "in.bit", work / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in seeds()[:warm]:     # warm: every model loaded, synthesis traced
        src.write_bytes(s[1:])
        r = worker.run_case(fn, [str(src), str(out_dir / "w.png"), *reg], 120)
        if r["rc"] != 0:
            raise RuntimeError(f"a golden stream does not decode: {r['stderr'][:200]}")
        shutil.rmtree(out_dir)
        out_dir.mkdir()
    t = Tally(baseline_rss_mb=maxrss_bytes() / 2**20)
    base = maxrss_bytes()
    last_peak = base
    from tqdm import tqdm
    t0 = time.monotonic()
    for cid, data, expect in tqdm(cases, desc="full decodes (in-process main)", unit="stream", disable=not progress,
                                  file=sys.stderr, mininterval=2):
        src.write_bytes(data)
        dst = out_dir / "out.png"
        before = current_rss_bytes()
        r = worker.run_case(fn, [str(src), str(dst), "--max-pixels", str(max_pixels), *reg], timeout)
        t.cases += 1
        t.max_seconds = max(t.max_seconds, r["seconds"])
        what = check_result(r["rc"], r["stderr"], r["escaped"], r["timed_out"], out_dir, dst, data, expect)
        peak = maxrss_bytes()
        if peak > last_peak:
            # A new process peak: this case's own rise is measured from the RSS just before it (the process
            # itself grows over thousands of streams: ~1 GB over 20,000, which is not one stream's doing).
            bound = header_bound(data, max_pixels)
            t.worst_rss_ratio = max(t.worst_rss_ratio, (peak - before) / bound)
            if peak - before > bound and what is None:
                what = f"peak RSS rose to {peak >> 20} MiB, {(peak - before) >> 20} MiB above the RSS before " \
                       f"this stream; header bound {bound >> 20} MiB"
            last_peak = peak
        if what is None:
            t.decoded += r["rc"] == 0
            t.rejected += r["rc"] != 0
        else:
            failures_dir.mkdir(parents=True, exist_ok=True)
            (failures_dir / f"{cid}.bit").write_bytes(data)
            t.failures.append({"id": cid, "what": what, "stderr": r["stderr"][-500:]})
        shutil.rmtree(out_dir)
        out_dir.mkdir()
    t.seconds = round(time.monotonic() - t0, 1)
    t.peak_rss_mb = maxrss_bytes() / 2**20
    return t


def run_subprocess(cases, work: Path, max_pixels: int, timeout: float, registry: str | None, progress: bool,
                   as_gb: float, failures_dir: Path) -> Tally:
    """A sample through decoder/decode.sh itself, one process per case, `ulimit -v` as the memory cap."""
    from conformance.fuzz.mutate import seeds
    reg = ["--registry", registry] if registry else []
    script = ROOT / "decoder" / "decode.sh"
    t = Tally()
    out_dir = work / "sub_out"
    out_dir.mkdir(parents=True, exist_ok=True)
    src = work / "sub_in.bit"
    floor_src = min((s[1:] for s in seeds()), key=len)
    src.write_bytes(floor_src)
    rc, err, sec, _, _ = _child(script, src, out_dir / "f.png", reg, timeout, as_gb)
    if rc[0] != 0:
        raise RuntimeError(f"decode.sh cannot decode the smallest golden stream: {err[-300:]}")
    floor = rc[1]
    t.baseline_rss_mb = floor / 2**20
    shutil.rmtree(out_dir)
    out_dir.mkdir()
    from tqdm import tqdm
    t0 = time.monotonic()
    for cid, data, expect in tqdm(cases, desc="full decodes (decode.sh)", unit="process", disable=not progress,
                                  file=sys.stderr):
        src.write_bytes(data)
        dst = out_dir / "out.png"
        (code, peak), err, sec, timed_out, _ = _child(script, src, dst, ["--max-pixels", str(max_pixels)] + reg,
                                                      timeout, as_gb)
        t.cases += 1
        t.max_seconds = max(t.max_seconds, sec)
        t.peak_rss_mb = max(t.peak_rss_mb, peak / 2**20)
        what = check_result(code, err, None, timed_out, out_dir, dst, data, expect)
        bound = header_bound(data, max_pixels)
        t.worst_rss_ratio = max(t.worst_rss_ratio, (peak - floor) / bound)
        if what is None and peak - floor > bound:
            what = f"peak RSS {peak >> 20} MiB: {(peak - floor) >> 20} MiB above the floor, bound {bound >> 20} MiB"
        if what is None:
            t.decoded += code == 0
            t.rejected += code != 0
        else:
            failures_dir.mkdir(parents=True, exist_ok=True)
            (failures_dir / f"sub-{cid}.bit").write_bytes(data)
            t.failures.append({"id": cid, "what": what, "stderr": err[-500:]})
        shutil.rmtree(out_dir)
        out_dir.mkdir()
    t.seconds = round(time.monotonic() - t0, 1)
    return t


def _child(script: Path, src: Path, dst: Path, extra: list[str], timeout: float, as_gb: float):
    """((exit status, peak RSS bytes), stderr, seconds, timed_out, None) of one decode.sh process."""
    cmd = f"ulimit -v {int(as_gb * (1 << 20))}; exec \"$0\" \"$@\""
    t0 = time.monotonic()
    p = subprocess.Popen(["bash", "-c", cmd, str(script), str(src), str(dst), *extra], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    timed_out = False
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            timed_out = True
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read()
    p.stderr.close()
    return (p.returncode, ru.ru_maxrss * 1024), err, time.monotonic() - t0, timed_out, None


def report(name: str, t: Tally) -> str:
    s = max(t.seconds, 1e-9)
    return (f"{PROG}: {name}: {t.cases} full decodes in {t.seconds:.0f} s ({t.cases / s:.1f}/s): {t.decoded} decoded "
            f"to a PNG of the header's size, {t.rejected} refused in one line; {len(t.failures)} contract failures; "
            f"slowest {t.max_seconds:.2f} s; peak RSS {t.peak_rss_mb:.0f} MiB (baseline {t.baseline_rss_mb:.0f} MiB), "
            f"worst rise {100 * t.worst_rss_ratio:.1f} % of the header bound")


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    from conformance.fuzz.campaign import campaign_parser
    p = campaign_parser(PROG, __doc__, cases=(10000, "in-process full decodes"),
                        seconds=(0, "stop the in-process part after this many seconds, 0 = no limit"),
                        subprocess=(40, "cases also run through decoder/decode.sh"),
                        mem_limit_gb=(6.0, "RLIMIT_AS here and ulimit -v for decode.sh"),
                        out=("runs/fuzz-decode", "failing inputs and summary.json"))
    p.add_argument("--corpus", default=None,
                   help="parse-fuzzer corpus to include (default conformance/fuzz_corpus/parse)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
    p.add_argument("--timeout", type=float, default=60, help="seconds per case (default 60)")
    args = p.parse_args(argv)
    from conformance.children.worker import set_memory_limit
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = build_cases(args.cases, args.seed, args.registry, Path(args.corpus) if args.corpus else None)
    rng = random.Random(args.seed + 1)
    sample = rng.sample(cases, min(args.subprocess, len(cases)))
    res = {}
    with tempfile.TemporaryDirectory(prefix="fuzz_decode.") as tmp:
        if sample:
            res["decode.sh"] = run_subprocess(sample, Path(tmp), args.max_pixels, max(args.timeout, 120),
                                              args.registry, not args.no_progress, args.mem_limit_gb,
                                              out / "failures")
            print(report("decode.sh processes", res["decode.sh"]), flush=True)
        set_memory_limit(args.mem_limit_gb)
        if args.seconds:
            cases = _time_boxed(cases, args.seconds)
        res["in-process"] = run_inprocess(cases, Path(tmp), args.max_pixels, args.timeout, args.registry,
                                          not args.no_progress, out / "failures")
    print(report("in-process main()", res["in-process"]))
    (out / "summary.json").write_text(json.dumps({k: asdict(v) for k, v in res.items()}, indent=1))
    bad = [f for v in res.values() for f in v.failures]
    for f in bad[:20]:
        print(f"{PROG}: FAIL {f['id']}: {f['what']}", file=sys.stderr)
    return 1 if bad else 0


class _time_boxed(list):
    """A case list whose iteration stops once the time budget is spent."""

    def __init__(self, cases, seconds: float):
        super().__init__(cases)
        self.seconds = seconds

    def __iter__(self):
        t0 = time.monotonic()
        for c in super().__iter__():
            if time.monotonic() - t0 > self.seconds:
                return
            yield c


if __name__ == "__main__":
    sys.exit(main())
