"""`python -m decoder --backend jax`, plus a report of where JAX ran (for the parity check).

Runs the decoder's own main() in this process with the JAX synthesis backend, then prints
one JSON line {"jax_report": {...}}: JAX's version, platform and device, the matmul
precision in force (must be 'highest': no TF32) and, on a GPU, the peak device memory, so
the parity check claims a GPU only if the GPU did the work.
"""

from __future__ import annotations

import json
import os
import sys

from models.cli import one_line_errors

PROG = "python -m conformance.children.jax_decode"


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from decoder.jax_synthesis import configure, settings
    configure()
    from decoder.__main__ import main as decoder_main
    rc = decoder_main(["--backend", "jax", *(sys.argv[1:] if argv is None else argv)])
    rep = settings()
    try:
        import jax
        stats = jax.devices()[0].memory_stats() or {}
        rep["peak_bytes"] = int(stats.get("peak_bytes_in_use", 0))
    except Exception:  # noqa: BLE001 - CPU devices have no memory stats
        rep["peak_bytes"] = 0
    print(json.dumps({"jax_report": rep}), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
