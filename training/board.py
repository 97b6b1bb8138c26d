"""TensorBoard scalars and images beside curve.csv (`make tensorboard` serves them).

TensorBoard ships with TF; where TF is absent (the accelerator machines) every call is a no-op,
and curve.csv and train.log remain the record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class Board:
    """One run's event files in <run>/tb; `enabled` is False without TF or off the lead process."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.writer = None
        if enabled:
            from training.validate import tf_available
            if tf_available():
                import tensorflow as tf
                self.writer = tf.summary.create_file_writer(str(folder))

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        import tensorflow as tf
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, float(value))
        self.writer.flush()

    def images(self, step: int, name: str, images: list[np.ndarray]) -> None:
        """uint8 or [0, 1] float HWC images, shown side by side as one batch."""
        if self.writer is None or not images:
            return
        import tensorflow as tf
        batch = np.stack([np.clip(im, 0, 1) if im.dtype.kind == "f" else im / 255.0 for im in images])
        with self.writer.as_default(step=step):
            tf.summary.image(name, batch.astype(np.float32), max_outputs=len(images))
        self.writer.flush()
