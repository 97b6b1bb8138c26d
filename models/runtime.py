"""TensorFlow runtime settings shared by every entry point."""

from __future__ import annotations

import os
import sys


def import_tensorflow():
    """`import tensorflow`, without the JAX import TensorFlow does on the side.

    When jax is installed (the training venv has it), TensorFlow's TFLite helpers import it at
    `import tensorflow` (tensorflow/lite/python/util.py: `from jax import xla_computation`, used only
    to convert JAX functions to TFLite). A decoder process must not load JAX (it is training code's
    runtime, ~0.5 s of start-up), so that one import is made to fail for the
    duration of TensorFlow's own import; TensorFlow handles the ImportError. The block is lifted
    afterwards, so a later explicit `import jax` in the same process still works.
    """
    if "tensorflow" in sys.modules or "jax" in sys.modules:
        import tensorflow as tf
        return tf
    sys.modules["jax"] = None            # `import jax` raises ImportError while this entry is None
    try:
        import tensorflow as tf
    finally:
        if "jax" in sys.modules and sys.modules["jax"] is None:
            del sys.modules["jax"]
    return tf


def configure(threads: int = 0) -> None:
    """Quiet logs, no TF32 (GPU results must stay full fp32), optional thread count."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = import_tensorflow()
    tf.get_logger().setLevel("ERROR")
    tf.config.experimental.enable_tensor_float_32_execution(False)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
