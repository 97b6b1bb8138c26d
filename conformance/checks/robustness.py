"""Check 5, robustness: hostile streams either decode or fail cleanly.

Cases come from conformance/fuzz/mutate.py (seeded): truncations, bit flips with and
without a re-computed CRC, every header field at its extremes (huge sizes,
unknown versions, wrong model ids, lengths past the end), appended and
spliced data, empty and random files, plus the unmodified streams as controls.

Each case must end with either exit 0 and a valid PNG, or a non-zero exit with
exactly one line on stderr and no output file; never a signal, a traceback, a
hang (per-case timeout) or a file left behind (output or temporary). Cases
that are provably invalid must be rejected, the controls must decode. Memory is
capped with RLIMIT_AS in every decoder process.

Speed: the cases run in ONE long-lived worker (conformance/children/worker.py) that
calls the decoder's main() in-process; a handful also run through the real
`python -m decoder` CLI, each in its own capped process. A worker that dies is
restarted and the case that killed it is reported.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from conformance.common import child_env, python, sha16
from conformance.fuzz import mutate
from conformance.report import CheckResult, Table

FULL_CASES, QUICK_CASES = 300, 100
FULL_CLI, QUICK_CLI = 6, 3
MEMORY_RE = re.compile(r"MemoryError|Unable to allocate|out of memory|OOM|bad_alloc", re.I)
HARD_GRACE = 15.0            # seconds past the case timeout before the worker is killed
STARTUP_TIMEOUT = 180.0
# Real-CLI runs: one case of each, in this order (all quick to decide; the expensive ones stay in the worker).
CLI_PICKS = (("control", lambda c: c.kind == "control"), ("empty file", lambda c: c.id == "g-empty"),
             ("wrong model id", lambda c: c.id.split("-", 1)[-1].startswith("hash-")),
             ("random bytes", lambda c: c.id == "g-random-1000"),
             ("length past the end", lambda c: c.id.endswith("zlen-past-end")),
             ("truncated", lambda c: c.kind == "truncate"))


@dataclass
class CaseResult:
    id: str
    kind: str
    detail: str
    expect: str
    via: str                      # worker | cli
    outcome: str                  # decoded | rejected | timeout | signal | escaped | died
    rc: int | None
    seconds: float
    message: str                  # the one-line error, or what went wrong
    violation: str = ""

    @property
    def ok(self) -> bool:
        return not self.violation


def _signame(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def judge(case: mutate.Case, via: str, rc: int | None, stderr: str, seconds: float, out_dir: Path,
          timed_out: bool = False, escaped: str | None = None, timeout: float = 0.0) -> CaseResult:
    """Apply the contract to one finished case (pure apart from looking at out_dir)."""
    output = out_dir / "out.png"
    lines = [l for l in (stderr or "").splitlines() if l.strip()]
    msg = lines[-1] if lines else ""
    res = CaseResult(case.id, case.kind, case.detail, case.expect, via, "", rc, seconds, msg)
    stray = sorted(p.name for p in out_dir.iterdir() if p.name != "out.png") if out_dir.is_dir() else []
    problems = []
    if timed_out:
        res.outcome = "timeout"
        problems.append(f"did not finish within {timeout:.0f} s (hang)")
    elif escaped:
        res.outcome = "escaped"
        problems.append(f"main() raised {escaped} (a traceback, not a one-line error)")
    elif rc is not None and rc < 0:
        res.outcome = "signal"
        problems.append(f"killed by {_signame(rc)}")
    elif rc == 0:
        res.outcome = "decoded"
        if not output.is_file():
            problems.append("exit 0 but no output file")
        else:
            try:
                from PIL import Image
                with Image.open(output) as im:
                    im.load()
            except Exception as e:  # noqa: BLE001
                problems.append(f"exit 0 but the output is not a valid PNG ({type(e).__name__})")
        if case.expect == "reject":
            problems.append(f"decoded a stream that must be rejected ({case.detail})")
    elif rc is None:
        res.outcome = "died"
        problems.append("no exit status")
    else:
        res.outcome = "rejected"
        if output.exists():
            problems.append(f"left a partial output file ({output.stat().st_size} B)")
        if "Traceback" in (stderr or ""):
            problems.append("traceback on stderr")
        elif len(lines) != 1:
            problems.append(f"error message is {len(lines)} lines, not one")
        if case.expect == "decode":
            problems.append(f"rejected a valid stream: {msg}")
    if stray:
        problems.append(f"left file(s) behind: {', '.join(stray[:3])}")
    res.violation = "; ".join(problems)
    return res


class Worker:
    """The long-lived decoder worker and its line protocol, with hard timeouts."""

    def __init__(self, decoder_main: str, mem_limit_gb: float, warm: bool, log: Path):
        self.cmd = [python(), "-m", "conformance.children.worker", "--decoder-main", decoder_main,
                    "--mem-limit-gb", str(mem_limit_gb)] + (["--warm"] if warm else [])
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.buf = b""
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                                     env=child_env(), start_new_session=True)
        logf.close()
        self.buf = b""
        line = self._readline(STARTUP_TIMEOUT)
        if not isinstance(line, dict) or not line.get("ready"):
            self.kill()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] if self.log.exists() else []
            raise RuntimeError(f"robustness worker did not start: {tail[0] if tail else line}")

    def _readline(self, timeout: float):
        """A parsed JSON line, 'timeout', or ('dead', returncode)."""
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return "timeout"
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return ("dead", self.proc.wait())
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, msg: dict, hard_timeout: float):
        if self.proc is None:
            self.start()
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return ("dead", self.proc.wait())
        return self._readline(hard_timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


def _prepare(case: mutate.Case, work: Path) -> tuple[Path, Path]:
    src = work / "cases" / f"{case.id}.bit"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(case.data)
    out = work / "out" / case.id
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return src, out


# Robustness cases run the decoder with this pixel limit: every case then has a
# small time bound (crafted headers near the default 100 MP limit would each
# spend minutes synthesising garbage, which proves nothing about parsing). The
# limit itself is exercised by the cases above and below it.
ROBUST_MAX_PIXELS = 4_000_000


def _argv(src: Path, out: Path, registry: str | None, max_pixels: int = ROBUST_MAX_PIXELS) -> list[str]:
    return ([str(src), str(out / "out.png"), "--max-pixels", str(max_pixels)]
            + (["--registry", str(registry)] if registry else []))


def run_cases(cases: list[mutate.Case], work: Path, registry: str | None, *,
              decoder_main: str = "decoder.__main__:main",
              warm: bool = True, case_timeout: float = 30.0, mem_limit_gb: float = 4.0, hard_grace: float = HARD_GRACE,
              bar=None, stop_on_violation: bool = False) -> tuple[list[CaseResult], int]:
    """All cases through the worker; returns the results and how many times the worker was (re)started."""
    worker = Worker(decoder_main, mem_limit_gb, warm, work / "worker.log")
    results = []
    try:
        for case in cases:
            src, out = _prepare(case, work)
            resp = worker.request({"id": case.id, "argv": _argv(src, out, registry), "timeout": case_timeout},
                                  case_timeout + hard_grace)
            if resp == "timeout":
                worker.kill()
                res = judge(case, "worker", None, "", case_timeout + hard_grace, out, timed_out=True,
                            timeout=case_timeout + hard_grace)
                res.message = "worker killed after the hard timeout"
            elif isinstance(resp, tuple):
                rc = resp[1]
                worker.proc = None
                res = judge(case, "worker", rc if rc < 0 else None, "", 0.0, out)
                if rc >= 0:
                    res.outcome, res.violation = "died", f"worker exited (status {rc}) during this case"
                res.message = f"worker died ({_signame(rc) if rc < 0 else f'exit {rc}'}) on this case"
            else:
                res = judge(case, "worker", resp["rc"], resp["stderr"], resp["seconds"], out,
                            timed_out=resp["timed_out"], escaped=resp["escaped"], timeout=case_timeout)
                if resp["timed_out"]:
                    worker.kill()       # interrupted mid-decode: start the next case from a clean process
            results.append(res)
            if res.ok:
                shutil.rmtree(out, ignore_errors=True)
            if bar is not None:
                bar.set_postfix_str(f"{case.id} {res.outcome}")
                bar.update(1)
            if stop_on_violation and not res.ok:
                break
    finally:
        worker.close()
    return results, worker.starts


def run_cli_cases(cases: list[mutate.Case], work: Path, registry: str | None, *,
                  cli: tuple[str, ...] = ("-m", "decoder"), timeout: float = 120.0,
                  mem_limit_gb: float = 4.0) -> list[CaseResult]:
    """A few cases through the real CLI, each in a fresh process under RLIMIT_AS and a timeout."""
    results = []
    for case in cases:
        src, out = _prepare(case, work / "cli")
        cmd = [python(), "-m", "conformance.children.limited", "--as-gb", str(mem_limit_gb), "--", *cli,
               *_argv(src, out, registry)]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            so, se = p.communicate(timeout=timeout)
            res = judge(case, "cli", p.returncode, se, time.perf_counter() - t0, out)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            res = judge(case, "cli", None, "", timeout, out, timed_out=True, timeout=timeout)
        results.append(res)
    return results


def pick_cli_cases(cases: list[mutate.Case], k: int) -> list[mutate.Case]:
    """One case of each kind in CLI_PICKS (control first), up to k."""
    picked = []
    for _name, pred in CLI_PICKS:
        c = next((c for c in cases if pred(c) and c not in picked), None)
        if c is not None:
            picked.append(c)
    return picked[:k]


def base_streams(ctx) -> list[bytes]:
    """Small streams from the first readable image: the first and last model at delta 1, and an odd-size crop."""
    img = next((i.rgb for i in ctx.images if i.rgb is not None), None)
    if img is None:
        yy, xx = np.mgrid[0:128, 0:192]
        img = np.stack([(xx * 255 // 191), (yy * 255 // 127), (xx + yy) % 256], -1).astype(np.uint8)
    crop = np.ascontiguousarray(img[:128, :192])
    enc = ctx.encoder
    n = len(enc.models.distinct_entries())
    bases = [enc.encode_fixed(crop, 0, 128)]
    bases.append(enc.encode_fixed(crop, n - 1, 128) if n > 1 else enc.encode_fixed(crop, 0, 100))
    bases.append(enc.encode_fixed(np.ascontiguousarray(img[:17, :23]), 0, 160))
    return bases


def registry_hashes(registry) -> dict[int, int]:
    return {e.target_index: e.hash16 for e in registry.entries}


def summarize(r: CheckResult, results: list[CaseResult], cli_results: list[CaseResult], report_dir: Path | None,
              cases: list[mutate.Case]) -> None:
    """Tables, figures and failures from the case results; failing cases are saved for reproduction."""
    by_id = {c.id: c for c in cases}
    if report_dir is not None:
        shutil.rmtree(report_dir / "robustness_failures", ignore_errors=True)   # never mix in an older run's cases
    for res in results + cli_results:
        if not res.ok:
            r.fail(f"[{res.via}] {res.kind}: {res.detail}: {res.violation}", case=res.id)
            if report_dir is not None:
                d = report_dir / "robustness_failures"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{res.id}.bit").write_bytes(by_id[res.id].data)
    kinds = sorted({x.kind for x in results})
    rows = []
    for k in kinds:
        g = [x for x in results if x.kind == k]
        rows.append([k, len(g), sum(x.outcome == "decoded" for x in g), sum(x.outcome == "rejected" for x in g),
                     sum(not x.ok for x in g), f"{max(x.seconds for x in g):.2f}"])
    r.tables.append(Table("Cases by kind (worker: decoder main() in-process)",
                          ["kind", "cases", "decoded", "rejected cleanly", "violations", "max s"], rows))
    if cli_results:
        r.tables.append(Table("Real CLI runs (python -m decoder, one process each, RLIMIT_AS)",
                              ["case", "detail", "exit", "outcome", "stderr", "seconds", "ok"],
                              [[x.id, x.detail, x.rc, x.outcome, x.message[:90], f"{x.seconds:.1f}",
                                "yes" if x.ok else f"NO: {x.violation}"] for x in cli_results]))
    mem = sum(bool(MEMORY_RE.search(x.message)) for x in results)
    r.figures.update(cases=len(results), cli_runs=len(cli_results),
                     decoded=sum(x.outcome == "decoded" for x in results),
                     rejected=sum(x.outcome == "rejected" for x in results),
                     violations=sum(not x.ok for x in results + cli_results),
                     rejected_for_memory=mem,
                     max_case_seconds=round(max((x.seconds for x in results), default=0.0), 3))


def check(ctx, decoder_main: str = "decoder.__main__:main", cli: tuple[str, ...] = ("-m", "decoder")) -> CheckResult:
    r = CheckResult("robustness", True, "")
    t0 = time.perf_counter()
    n = ctx.opts.cases or (QUICK_CASES if ctx.opts.quick else FULL_CASES)
    bases = base_streams(ctx)
    cases = mutate.generate(bases, n, ctx.opts.seed, registry_hashes(ctx.registry), ROBUST_MAX_PIXELS)
    k, shards = getattr(ctx.opts, "shard", (0, 1))
    cases = [c for i, c in enumerate(cases) if i % shards == k]      # --shard: this share, ids as in the whole set
    work = ctx.work / "robustness"
    bar = ctx.bar(len(cases), "robustness")
    results, starts = run_cases(cases, work, ctx.opts.registry, decoder_main=decoder_main,
                                case_timeout=ctx.opts.case_timeout, mem_limit_gb=ctx.opts.mem_limit_gb, bar=bar)
    bar.close()
    t_worker = time.perf_counter() - t0
    cli_cases = pick_cli_cases(cases, QUICK_CLI if ctx.opts.quick else FULL_CLI) if k == 0 else []
    cli_results = run_cli_cases(cli_cases, work, ctx.opts.registry, cli=cli, mem_limit_gb=ctx.opts.mem_limit_gb,
                                timeout=60.0 + 2 * ctx.opts.case_timeout)
    summarize(r, results, cli_results, ctx.opts.report_dir, cases)
    with open(ctx.opts.report_dir / "robustness.jsonl", "w") as f:
        for x in results + cli_results:
            f.write(json.dumps({**asdict(x), "ok": x.ok}) + "\n")
    r.figures.update(seed=ctx.opts.seed, case_set_sha256_16=mutate.fingerprint(cases),
                     base_streams=", ".join(f"{len(b)} B ({sha16(b)[:8]})" for b in bases),
                     worker_starts=starts, case_timeout_s=ctx.opts.case_timeout, mem_limit_gb=ctx.opts.mem_limit_gb,
                     worker_wall_s=round(t_worker, 1), wall_s=round(time.perf_counter() - t0, 1))
    r.notes.append("every case is in robustness.jsonl; failing cases are saved under robustness_failures/ "
                   "(reproduce: python -m decoder robustness_failures/<case>.bit out.png)")
    r.summary = (f"{len(results)} cases (seed {ctx.opts.seed}) + {len(cli_results)} real-CLI runs in "
                 f"{r.figures['wall_s']} s: {r.figures['decoded']} decoded, {r.figures['rejected']} rejected cleanly, "
                 f"{r.figures['violations']} violation(s)")
    return r
