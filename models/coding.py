"""Range coding with stored integer CDF tables, through tfc's range coder ops.

The tables are plain int32 arrays loaded from the model file; nothing here
evaluates a distribution, so encoder and decoder parse with identical tables on
every platform. Symbols outside a table's range use tfc's overflow (escape +
Elias-gamma) mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class CorruptStream(ValueError):
    """The range decoder did not end where the stream ends."""


@dataclass(frozen=True)
class CdfTable:
    """tfc's lookup layout: rows of [-precision, cdf...] concatenated, plus offsets."""

    cdf: np.ndarray      # int32, 1-D
    offset: np.ndarray   # int32, one per row: the symbol value of the row's first bin

    @property
    def rows(self) -> int:
        return int(self.offset.shape[0])


def _ops():
    import tensorflow as tf
    import tensorflow_compression as tfc
    return tf, tfc


def encode(symbols: np.ndarray, indexes: np.ndarray, table: CdfTable) -> bytes:
    """Symbols (int) coded with the CDF row given by each index."""
    tf, tfc = _ops()
    idx = np.asarray(indexes, np.int32).reshape(-1)
    sym = np.asarray(symbols, np.int32).reshape(-1) - table.offset[idx]
    with tf.device("/CPU:0"):
        handle = tfc.create_range_encoder([], table.cdf)
        handle = tfc.entropy_encode_index(handle, idx, sym)
        return bytes(tfc.entropy_encode_finalize(handle).numpy())


def decode(data: bytes, indexes: np.ndarray, table: CdfTable) -> np.ndarray:
    """Inverse of encode; raises CorruptStream if the stream does not parse exactly."""
    tf, tfc = _ops()
    idx = np.asarray(indexes, np.int32)
    flat = idx.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= table.rows):
        raise CorruptStream("CDF index out of range")
    with tf.device("/CPU:0"):
        handle = tfc.create_range_decoder(tf.constant(data, tf.string), table.cdf)
        handle, sym = tfc.entropy_decode_index(handle, flat, tf.shape(flat), tf.int32)
        ok = bool(tfc.entropy_decode_finalize(handle).numpy())
    if not ok:
        raise CorruptStream("range decoder did not end at the end of its substream")
    return (sym.numpy() + table.offset[flat]).reshape(idx.shape)
