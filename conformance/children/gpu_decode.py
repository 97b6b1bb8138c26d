"""`python -m decoder` on the GPU, with proof that the GPU was used (for the parity check).

Runs the decoder's own main() in this process (TF32 off: models.runtime and
NVIDIA_TF32_OVERRIDE=0), then prints one JSON line {"gpu_report": {...}} with
the GPU's peak memory. The parity check claims nothing unless that peak is
non-zero: a GPU that is visible but unused proves nothing.
"""

from __future__ import annotations

import json
import os
import sys

from models.cli import one_line_errors

PROG = "python -m conformance.children.gpu_decode"


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("ratelock-gpu-decode: error: no GPU visible", file=sys.stderr)
        return 3
    from decoder.__main__ import main as decoder_main
    rc = decoder_main(argv)
    details = tf.config.experimental.get_device_details(gpus[0])
    try:
        peak = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except (ValueError, RuntimeError):
        peak = 0
    print(json.dumps({"gpu_report": {"gpus": [g.name for g in gpus], "device_name": details.get("device_name", "?"),
                                     "peak_bytes": peak,
                                     "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled())}}),
          flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
