"""Run python under a memory cap: `python -m conformance.children.limited --as-gb 4 -- -m decoder in.bit out.png`.

Sets RLIMIT_AS and then exec()s the interpreter, so the child *is* the real
`python -m decoder` process (its exit status and any killing signal are its
own) but cannot allocate more than the cap. Used for the robustness check's
real-CLI runs; no preexec_fn is needed in the (multi-threaded) parent.
"""

from __future__ import annotations

import os
import sys

from models.cli import one_line_errors

PROG = "python -m conformance.children.limited"


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv[:1] != ["--as-gb"]:
        print("usage: python -m conformance.children.limited --as-gb GB -- PYTHON_ARGS...", file=sys.stderr)
        return 2
    sep = argv.index("--")
    gb = float(argv[1])
    from conformance.children.worker import set_memory_limit
    set_memory_limit(gb)
    os.execv(sys.executable, [sys.executable, *argv[sep + 1:]])
    return 127   # not reached


if __name__ == "__main__":
    sys.exit(main())
