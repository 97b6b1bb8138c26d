"""A `--dir` batch decodes in a worker process, replaced when its memory has grown.

Why a process: TensorFlow 2.14's oneDNN kernels keep a primitive per input shape and thread, up to 1024
each, inside TF (not configurable), and glibc keeps what large images freed. A folder of many image
sizes grows a decoder by up to ~1.5 GiB before it levels off (evaluation/BENCH.md, "Batch memory"); only
a new process gives that back. So the `--dir` parent (no TensorFlow) hands streams one at a time to a
worker, `python -m decoder.worker`, and replaces it after every `--recycle` streams if its RSS is more
than 5 % above what it was after its first streams. A worker that dies (a crash, the OOM killer) costs
only the stream it was on, reported as failed; the next worker goes on.

Protocol: {"ready": true} once TensorFlow and the registry are loaded, then one JSON line each way
per stream: {"src", "dst"} in; {"ok", "error", "output_errno", "info", "rss_mib"} out. The worker
writes the PNG itself (models/pngio.py: whole or not at all).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GROWTH = 1.05            # replace a worker whose RSS grew more than this over its reference
PROG = "python -m decoder.worker"


class WorkerDied(RuntimeError):
    """The worker ended in the middle of a stream; the message is one line."""


def _how(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"status {code}"


def rss_mib() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def decode_file(src: Path, dst: Path, models, limits, info: bool) -> dict | None:
    """One stream file to one PNG (atomic); with info, the --info record of it."""
    from decoder import decode as D
    from models.pngio import write_png_atomic
    t0 = time.perf_counter()
    data = D.read_stream(src, limits)
    parsed = D.parse(data, models, limits)
    model = models.get(parsed.header)
    rgb = D.to_uint8(D.synthesize(model.synthesis, D.dequantize(parsed)), parsed.header.width, parsed.header.height)
    write_png_atomic(dst, rgb)
    if not info:
        return None
    h = parsed.header
    return {"stream": str(src), "output": str(dst), "width": h.width, "height": h.height,
            "target_index": h.target_index, "model": model.entry.name, "delta_code": h.delta_code,
            "bytes": len(data), "bpp": 8 * len(data) / (h.width * h.height),
            "symbols_sha256_16": parsed.symbol_hash(), "integers": parsed.integer_hashes(),
            "seconds": round(time.perf_counter() - t0, 4)}


# -- the parent's side -----------------------------------------------------------------------------------

class Pool:
    """The parent's worker: started on first use, replaced when it has grown (module docstring) or died."""

    def __init__(self, args: list[str], recycle: int):
        self.args, self.recycle = args, recycle
        self.proc: subprocess.Popen | None = None
        self.count = self.ref = self.started = 0

    def _start(self) -> subprocess.Popen:
        """A fresh worker, once it says it is ready; one that cannot start stops the batch (models.batch.Fatal)."""
        env = dict(os.environ)                   # this decoder's package first, wherever the parent runs from
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                             *filter(None, [env.get("PYTHONPATH")])])
        cmd = [sys.executable, "-m", "decoder.worker", *self.args, "--parent", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        if not proc.stdout.readline():
            from models.batch import Fatal
            raise Fatal(f"the decoder process could not start ({_how(proc.wait())}); see the line above")
        self.proc, self.count, self.ref = proc, 0, 0
        self.started += 1
        return proc

    def decode(self, src: Path, dst: Path) -> dict:
        """The worker's reply for one stream; raises WorkerDied if it ended on it."""
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        try:
            proc.stdin.write(json.dumps({"src": str(src), "dst": str(dst)}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            code = proc.wait()
            self.proc = None
            if code == 128 + signal.SIGTERM or code == -signal.SIGTERM:
                from models.batch import Stopped
                raise Stopped()
            raise WorkerDied(f"the decoder process ended on this stream ({_how(code)}); the rest go on in a new one")
        reply = json.loads(line)
        self.count += 1
        if self.count == max(1, min(100, self.recycle // 10)):
            self.ref = reply.get("rss_mib", 0)
        if self.count % self.recycle == 0 and self.ref and reply.get("rss_mib", 0) > GROWTH * self.ref:
            self.close()                         # the next stream starts a fresh worker
        return reply

    def close(self, signum: int | None = None) -> None:
        """End the worker: EOF (it exits after its stream), or a signal (SIGTERM: it stops between files)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if signum is not None:
                proc.send_signal(signum)
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the worker ------------------------------------------------------------------------------------------

def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this worker when the parent dies, so a killed batch leaves no decoder running on."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != parent:                               # the parent died before the line above
        sys.exit(1)


def _serve(args: argparse.Namespace, channel) -> int:
    from models.runtime import configure
    configure(args.threads)
    from decoder import decode as D
    from models.batch import Stopped, stop_on_sigterm
    from models.pngio import OutputError
    limits = D.Limits(max_pixels=args.max_pixels)
    models = D.ModelCache(args.registry, backend=args.backend)
    channel.write('{"ready": true}\n')                  # the parent waits for this before the first stream
    channel.flush()
    try:
        with stop_on_sigterm():
            for line in sys.stdin:
                job = json.loads(line)
                reply: dict = {"ok": True}
                try:
                    reply["info"] = decode_file(Path(job["src"]), Path(job["dst"]), models, limits, args.info)
                except Exception as e:  # noqa: BLE001 - the parent reports it, the worker goes on
                    text = str(e).splitlines()[0] if str(e) else type(e).__name__
                    reply = {"ok": False, "error": text, "output_errno": e.errno if isinstance(e, OutputError) else None}
                reply["rss_mib"] = rss_mib()
                channel.write(json.dumps(reply) + "\n")
                channel.flush()
    except Stopped:
        return 128 + signal.SIGTERM
    return 0


def main(argv: list[str] | None = None) -> int:
    """The worker process (module docstring); started by the --dir parent, never by hand."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from models.cli import ArgumentParser, one_line_errors
    p = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--registry", default=None)
    p.add_argument("--max-pixels", type=int, required=True)
    p.add_argument("--backend", default="tf")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--info", action="store_true")
    p.add_argument("--parent", type=int, default=0, help="the parent's pid (it may be 1, in a container)")
    args = p.parse_args(argv)
    _die_with_parent(args.parent)
    channel = os.fdopen(os.dup(1), "w", buffering=1)     # replies only: anything else printed goes to stderr
    os.dup2(2, 1)
    return one_line_errors(PROG, lambda: _serve(args, channel))


if __name__ == "__main__":
    sys.exit(main())
