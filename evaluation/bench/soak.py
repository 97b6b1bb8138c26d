"""Batch memory soak: the real `python -m decoder --dir` over a very long folder, its RSS sampled as it goes.

  python -m evaluation.bench.soak --streams 100000 --out runs/soak       # evaluation/BENCH.md, "Batch memory"

A long batch must not grow: the question is whether peak RSS after N streams stays within 10 % of the
peak over the first 1,000. The folder is `--distinct` small streams of mixed sizes (made once by the
shipped models, cycled: every model, every latent size from 16 to 320 px), linked `--streams` times under
new names, so the decoder sees a folder of that many streams. A janitor removes the PNGs behind it, so
disk use stays small. The decoder runs from `--root` (default this checkout; a worktree of an older commit
measures the code before a change) with the same driver. RSS is the decoder's and its worker's together
(decoder/worker.py); the driver samples it twice a second. Prints a table; writes samples.csv and
soak.json into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evaluation.bench.measure import ROOT
from evaluation.datasets import KODAK
from models.cli import ArgumentParser, one_line_errors

PROG = "python -m evaluation.bench.soak"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=100_000, help="streams in the batch (default 100000)")
    p.add_argument("--distinct", type=int, default=400, help="distinct streams, cycled (default 400)")
    p.add_argument("--sizes", default="16-512", help="side lengths in px, MIN-MAX (default 16-512: 64 latent sizes)")
    p.add_argument("--every", type=int, default=1000, help="report RSS every this many streams (default 1000)")
    p.add_argument("--root", default=str(ROOT), help="checkout whose decoder runs (default: this one)")
    p.add_argument("--registry", default=None, help="model registry (default: the checkout's)")
    p.add_argument("--decoder-args", default="", help="more arguments for the decoder, e.g. '--recycle 0'")
    p.add_argument("--work", default=None, help="folder for the streams (default: a temp folder, removed)")
    p.add_argument("--out", default=str(ROOT / "runs" / "soak"), help="samples.csv and soak.json (default runs/soak)")
    p.add_argument("--make", metavar="DIR", help=argparse.SUPPRESS)      # child: make the distinct streams
    return p.parse_args(argv)


def make_streams(folder: Path, n: int, lo: int, hi: int, registry: str | None) -> None:
    """n streams of Kodak crops with sides in lo..hi, the shipped models in turn (fixed step, no search)."""
    import numpy as np

    from encoder.api import Encoder
    from encoder.imageio import load_rgb8
    rng = np.random.default_rng(0)
    kodak = sorted(KODAK.glob("*.png"))
    sources = [load_rgb8(p) for p in kodak[:8]] if kodak else [rng.integers(0, 256, (512, 768, 3), np.uint8)]
    enc = Encoder(registry)
    models = len(enc.models.distinct_entries())
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = (int(v) for v in rng.integers(lo, hi + 1, 2))
        y, x = int(rng.integers(0, src.shape[0] - h + 1)), int(rng.integers(0, src.shape[1] - w + 1))
        data = enc.encode_fixed(np.ascontiguousarray(src[y:y + h, x:x + w]), i % models, 112 + 8 * (i // models % 5))
        (folder / f"{i:05d}_{w}x{h}.bit").write_bytes(data)


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1]) // 1024
    except OSError:
        pass
    return out


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> tuple[dict[str, int], list[int]]:
    """RSS and peak of the decoder and its worker(s) together (decoder/worker.py), and the workers' pids."""
    st, kids = _status(pid), _children(pid)
    for k in kids:
        ks = _status(k)
        for key in ("VmRSS", "VmHWM"):
            st[key] = st.get(key, 0) + ks.get(key, 0)
    return st, kids


def _sweep(out: Path) -> int:
    """Remove finished PNGs (never a temp file being written); how many."""
    n = 0
    try:
        entries = list(os.scandir(out))
    except OSError:
        return 0
    for e in entries:
        if e.name.endswith(".png") and not e.name.startswith("."):
            try:
                os.unlink(e.path)
                n += 1
            except OSError:
                pass
    return n


def soak(args: argparse.Namespace, work: Path) -> dict:
    root = Path(args.root).resolve()
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="3")
    lo, hi = (int(v) for v in args.sizes.split("-"))
    distinct = work / "distinct"
    if not distinct.is_dir() or len(list(distinct.glob("*.bit"))) != args.distinct:
        shutil.rmtree(distinct, ignore_errors=True)
        cmd = [sys.executable, "-m", "evaluation.bench.soak", "--make", str(distinct), "--distinct",
               str(args.distinct), "--sizes", args.sizes] + (["--registry", args.registry] if args.registry else [])
        subprocess.run(cmd, check=True, env=dict(env, PYTHONPATH=str(ROOT)), cwd=ROOT)
    srcs = sorted(distinct.glob("*.bit"))
    folder, out = work / "in", work / "out"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    folder.mkdir()
    for i in range(args.streams):
        os.symlink(srcs[i % len(srcs)], folder / f"s{i:07d}.bit")
    cmd = [sys.executable, "-m", "decoder", "--dir", str(folder), str(out)] + \
        (["--registry", args.registry] if args.registry else []) + args.decoder_args.split()
    t0 = time.perf_counter()
    err_path = work / "stderr.txt"
    with open(err_path, "w") as err_file:       # a file, not a pipe: a chatty decoder must never block on it
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=err_file)
    samples, done, next_report, workers = [], 0, args.every, set()
    while True:
        st, kids = _tree(proc.pid)
        workers.update(kids)
        done += _sweep(out)
        if st:
            samples.append((round(time.perf_counter() - t0, 1), done, st.get("VmRSS", 0), st.get("VmHWM", 0)))
            if done >= next_report:
                print(f"{done:>8} streams  {samples[-1][0]:>8.0f} s  RSS {st['VmRSS']:>5} MiB  peak {st['VmHWM']:>5} MiB",
                      flush=True)
                next_report = (done // args.every + 1) * args.every
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)   # its own peak too (ru_maxrss), once it exits
        if pid:
            break
        time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done += _sweep(out)
    err = err_path.read_text(errors="replace")
    return {"command": " ".join(cmd), "root": str(root), "streams": args.streams, "distinct": args.distinct,
            "sizes": args.sizes, "decoded": done, "returncode": proc.returncode, "stderr_tail": err[-2000:],
            "seconds": round(time.perf_counter() - t0, 1), "ru_maxrss_mib": usage.ru_maxrss // 1024,
            "worker_processes": len(workers), "samples": samples}


def figures(res: dict, first: int = 1000) -> dict:
    """Peak over the first `first` streams, the peak over all, their ratio, and the RSS slope over the second
    half (MiB per 1000 streams, least squares over the samples taken while streams were still decoding: the
    last ones, after the worker has gone, would read as a fall)."""
    import numpy as np
    s = res["samples"]
    early = [x for x in s if x[1] <= first] or s[:1]
    peak_first = max(x[3] for x in early)
    peak_all = max(x[3] for x in s)
    half = [x for x in s if res["decoded"] / 2 <= x[1] < res["decoded"]]
    slope = (float(np.polyfit([x[1] for x in half], [x[2] for x in half], 1)[0]) * 1000
             if len({x[1] for x in half}) > 1 else float("nan"))
    return {"peak_first_mib": peak_first, "peak_all_mib": peak_all, "ratio": round(peak_all / peak_first, 4),
            "slope_mib_per_1000_second_half": round(slope, 3),
            "streams_per_s": round(res["decoded"] / max(res["seconds"], 1e-9), 2)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        if args.make:
            lo, hi = (int(v) for v in args.sizes.split("-"))
            make_streams(Path(args.make), args.distinct, lo, hi, args.registry)
            return 0
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ratelock-soak."))
        work.mkdir(parents=True, exist_ok=True)
        try:
            res = soak(args, work)
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
        res["figures"] = figures(res)
        outdir = Path(args.out)
        outdir.mkdir(parents=True, exist_ok=True)
        with open(outdir / "samples.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seconds", "streams", "rss_mib", "peak_mib"])
            w.writerows(res["samples"])
        (outdir / "soak.json").write_text(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=1))
        f = res["figures"]
        print(f"{res['decoded']} of {res['streams']} streams decoded in {res['seconds']:.0f} s "
              f"({f['streams_per_s']}/s), exit {res['returncode']}, {res['worker_processes']} worker process(es)\n"
              f"peak RSS over the first 1,000: {f['peak_first_mib']} MiB; over all: {f['peak_all_mib']} MiB "
              f"(x{f['ratio']}); RSS slope over the second half: {f['slope_mib_per_1000_second_half']} MiB/1000")
        return 0 if res["returncode"] == 0 and res["decoded"] == res["streams"] else 1
    return one_line_errors(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
