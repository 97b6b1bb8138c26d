"""TensorFlow runtime settings shared by every entry point."""

from __future__ import annotations

import os


def configure(threads: int = 0) -> None:
    """Quiet logs, no TF32 (GPU results must stay full fp32), optional thread count."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    tf.config.experimental.enable_tensor_float_32_execution(False)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
