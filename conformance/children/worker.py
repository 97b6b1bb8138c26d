"""Long-lived robustness worker: runs the decoder's main() in-process, one case per request.

  python -m conformance.children.worker [--decoder-main decoder.__main__:main] [--mem-limit-gb 4] [--warm]

Protocol: one JSON object per line on stdin ({"id", "argv", "timeout"}), one
JSON reply per line on the original stdout ({"id", "rc", "stdout", "stderr",
"seconds", "timed_out", "escaped"}). File descriptor 1 is pointed at stderr
after start-up so that nothing a library prints can corrupt the protocol.

Why in-process: TensorFlow start-up costs seconds, so hundreds of cases in
separate processes would take minutes; the parent still runs a handful of
cases through the real CLI. Memory is capped with RLIMIT_AS before anything
is imported; each case has a SIGALRM timeout (the parent also enforces a hard
one, since an alarm cannot interrupt a stuck C++ op). If this process dies by
a signal, the parent reports the case that was running.

With --share-models (the default for the real decoder) the decoder's
ModelCache is made a per-registry singleton, so a model is loaded once per
worker instead of once per case; the decode path itself is unchanged.

A second mode, for the determinism and parity checks' separate-process decodes:

  python -m conformance.children.worker decode [--entry decoder.__main__:main] [--threads N]
                                      --group STREAMS_DIR OUT_DIR REGISTRY [--group ...]

calls the entry (the decoder's main(), or conformance.children.gpu_decode / jax_decode, which
wrap it) once per group with `--dir STREAMS_DIR OUT_DIR --info --recycle 0 [--threads N]
[--registry REGISTRY]` ('-': the default registry), all in this one process, so
TensorFlow starts once per runtime configuration however many registries the
streams need (the suite's, and the bitstream v3 goldens'). The decoder's own
`--info` line carries each stream's parse-integer hashes ("integers": version,
symbols, scale_idx, mu_q, y_hat_q; decoder.decode.Parsed.integer_hashes).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import resource
import signal
import sys
import time

from models.cli import ArgumentParser, one_line_errors

PROG = "python -m conformance.children.worker"


class CaseTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so the decoder's `except Exception` cannot swallow it."""


_expired = False
REARM_S = 0.25


def _alarm(signum, frame):
    # TensorFlow's tracing (AutoGraph) swallows exceptions raised inside it, so once expired
    # the alarm re-arms itself and raises again until the exception gets through.
    global _expired
    _expired = True
    signal.setitimer(signal.ITIMER_REAL, REARM_S)
    raise CaseTimeout()


def set_memory_limit(gb: float) -> None:
    if gb > 0:
        n = int(gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (n, n))


def load_callable(spec: str):
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn or "main")


def _share_models() -> None:
    from decoder import decode as D
    original, shared = D.ModelCache, {}

    def cached(registry=None, backend: str = "tf"):
        key = f"{registry}|{backend}"
        if key not in shared:
            shared[key] = original(registry, backend=backend)
        return shared[key]
    D.ModelCache = cached


def run_case(fn, argv: list[str], timeout: float) -> dict:
    """One call of the decoder's main(); a timeout is reported even if something swallowed the alarm."""
    global _expired
    out, err = io.StringIO(), io.StringIO()
    rc, escaped = None, None
    _expired = False
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = fn(argv)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except CaseTimeout:
        pass
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - recorded: main() must never raise
        escaped = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    seconds = time.perf_counter() - t0
    timed_out = _expired or seconds > timeout
    return {"rc": rc if isinstance(rc, int) or rc is None else 1, "stdout": out.getvalue()[-2000:],
            "stderr": err.getvalue()[-4000:], "seconds": round(seconds, 4),
            "timed_out": timed_out, "escaped": None if timed_out else escaped}


def decode_main(argv: list[str]) -> int:
    """`decode` mode (module docstring): the decoder over several (streams, registry) groups in one process."""
    p = ArgumentParser(prog="python -m conformance.children.worker decode")
    p.add_argument("--entry", default="decoder.__main__:main", help="module:function called with the decoder argv")
    p.add_argument("--threads", type=int, default=0, help="passed on as the decoder's --threads (0: not passed)")
    p.add_argument("--group", nargs=3, action="append", required=True, metavar=("STREAMS_DIR", "OUT_DIR", "REGISTRY"),
                   help="decode every stream of STREAMS_DIR into OUT_DIR with REGISTRY ('-': the default)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    fn = load_callable(args.entry)
    rc = 0
    for src, out, registry in args.group:
        # --recycle 0: decode here, in the process whose configuration (environment, entry) is under test,
        # not in the decoder's own worker process (decoder/worker.py)
        cmd = ["--dir", src, out, "--info", "--recycle", "0"] + (["--threads", str(args.threads)] if args.threads else [])
        r = fn(cmd + (["--registry", registry] if registry != "-" else []))
        rc = rc or (r if isinstance(r, int) else 1)
    return rc


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["decode"]:
        return decode_main(argv[1:])
    p = ArgumentParser(prog="python -m conformance.children.worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoder-main", default="decoder.__main__:main",
                   help="module:function called with the decoder's argv (tests pass stand-ins)")
    p.add_argument("--mem-limit-gb", type=float, default=4.0, help="RLIMIT_AS for this process (0 = none)")
    p.add_argument("--warm", action="store_true", help="import TensorFlow and the decoder before reporting ready")
    p.add_argument("--no-share-models", action="store_true", help="let every case load its models afresh")
    args = p.parse_args(argv)
    set_memory_limit(args.mem_limit_gb)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    fn = load_callable(args.decoder_main)
    if args.warm:
        from models.runtime import configure
        configure()
        import decoder.decode  # noqa: F401
        import models.pngio  # noqa: F401
        if not args.no_share_models:
            _share_models()
    signal.signal(signal.SIGALRM, _alarm)
    proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        res = run_case(fn, list(req["argv"]), float(req.get("timeout", 30)))
        res["id"] = req.get("id")
        proto.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
