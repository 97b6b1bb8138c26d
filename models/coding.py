"""Range coding with stored integer CDF tables, through tfc's range coder ops.

The tables are plain int32 arrays loaded from the model file; nothing here
evaluates a distribution, so encoder and decoder parse with identical tables on
every platform.

No overflow (escape) coding: every row has a positive precision, so a decoded
symbol is always inside its row's range and the decoder cannot be driven into
tfc 2.14.1's unbounded Elias-gamma loop (a 29-byte crafted stream made
OverflowDecode spin forever; conformance/README.md). The encoder clamps latents
to the row's range instead; with tail mass 2^-12 per table this touches about
one latent in 10^4 (measured in MODEL_CARD.md's figures via `clamp_fraction`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class CorruptStream(ValueError):
    """The range decoder did not end where the stream ends."""


@dataclass(frozen=True)
class CdfTable:
    """tfc's lookup layout: rows of [precision, cdf...] concatenated, plus per-row offset and length."""

    cdf: np.ndarray      # int32, 1-D; every row's precision is positive (no overflow coding)
    offset: np.ndarray   # int32, one per row: the symbol value of the row's first bin
    length: np.ndarray   # int32, one per row: number of symbols the row codes

    @property
    def rows(self) -> int:
        return int(self.offset.shape[0])

    @classmethod
    def from_tfc(cls, cdf: np.ndarray, offset: np.ndarray) -> "CdfTable":
        """Convert tfc's overflow-enabled tables (negative precision headers)."""
        cdf = np.asarray(cdf, np.int32).copy()
        heads = np.flatnonzero(cdf < 0)
        if len(heads) != len(offset):
            raise ValueError("CDF table rows do not match offsets")
        ends = np.append(heads[1:], len(cdf))
        length = (ends - heads - 2).astype(np.int32)
        cdf[heads] = -cdf[heads]
        return cls(cdf, np.asarray(offset, np.int32), length)

    def clamp(self, symbols: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        """Symbols limited to what their rows can code (the encoder's side of 'no overflow')."""
        lo = self.offset[indexes]
        return np.clip(symbols, lo, lo + self.length[indexes] - 1).astype(np.int32)


def _ops():
    import tensorflow as tf
    import tensorflow_compression as tfc
    return tf, tfc


def encode(symbols: np.ndarray, indexes: np.ndarray, table: CdfTable) -> bytes:
    """Symbols (int) coded with the CDF row given by each index."""
    tf, tfc = _ops()
    idx = np.asarray(indexes, np.int32).reshape(-1)
    sym = np.asarray(symbols, np.int32).reshape(-1) - table.offset[idx]
    if sym.size and (sym.min() < 0 or np.any(sym >= table.length[idx])):
        raise ValueError("symbol outside its CDF row; clamp with CdfTable.clamp first")
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
