"""Container entry point: give TensorFlow a writable temp dir, then run the decoder CLI.

`import tensorflow` needs a usable temporary directory (Python's tempfile module
raises "No usable temporary directory found" on a fully read-only filesystem).
Under `docker run --read-only` this picks the first writable one of
$TMPDIR, /tmp, /dev/shm, else a private subfolder of the output folder (removed
again on exit). If none is writable it fails with one line on stderr, like
every other decoder error. Arguments are passed to `python -m decoder` unchanged.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile

PROG = "ratelock-decode"
VALUE_FLAGS = {"--registry", "--threads", "--max-pixels", "--backend", "--recycle"}  # decoder flags that take a value


def _writable(d: str | None) -> bool:
    # os.access reports EROFS, so a read-only mount counts as not writable.
    return bool(d) and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)


def _output_folder(argv: list[str]) -> str | None:
    """The folder the decoder will write into (must be writable anyway: PNGs are written via temp + rename)."""
    positional, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in VALUE_FLAGS:
            skip = True
        elif not a.startswith("-") or a == "-":
            positional.append(a)
    if len(positional) < 2:
        return None
    out = os.path.abspath(positional[1])
    if "--dir" in argv and os.path.isdir(out):
        return out
    return os.path.dirname(out)  # single file: its folder; --dir OUT not yet made: OUT's parent


def _fail(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def _exit_on_sigterm(signum, frame) -> None:
    sys.exit(128 + signum)


def main() -> int:
    argv = sys.argv[1:]
    if os.getpid() == 1:
        # As a container's PID 1 a signal without a handler is ignored, so `docker stop` would wait its
        # timeout and SIGKILL; exit as any other process would (the decoder's batch installs its own, which
        # lets the PNG being written finish or go first).
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    tmp = next((d for d in (os.environ.get("TMPDIR"), "/tmp", "/dev/shm") if _writable(d)), None)
    private = None
    if not any(a in ("-h", "--help") for a in argv):
        out = _output_folder(argv)
        if out and os.path.isdir(out) and not _writable(out):
            return _fail(f"output folder {out} is not writable by uid {os.getuid()} (PNGs are written there via a "
                         f"temp file): mount it writable, e.g. -v \"$PWD/out:{out}\" --user \"$(id -u):$(id -g)\"")
        if tmp is None:
            if not _writable(out):
                return _fail(f"no writable temporary folder ($TMPDIR, /tmp, /dev/shm) and the output folder "
                             f"{out or '(none given)'} is not writable: mount a writable output folder or add --tmpfs /tmp")
            tmp = private = tempfile.mkdtemp(prefix=".ratelock-tmp.", dir=out)
    if tmp:
        os.environ["TMPDIR"] = tmp
        tempfile.tempdir = tmp
    try:
        from decoder.__main__ import main as decode_main
        return decode_main(argv)
    finally:
        if private:
            shutil.rmtree(private, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
