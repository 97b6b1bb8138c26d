"""Range coding with stored integer CDF tables, through tfc's range coder ops.

The tables are plain int32 arrays loaded from the model file; nothing here
evaluates a distribution, so encoder and decoder parse with identical tables on
every platform.

Escapes, bounded (bitstream v2). The last bin of every row is an escape: a
symbol outside the row's range codes that bin, then, after all the regular
symbols, its side, its bit length (1..16) and the bits below the leading one,
each with a fixed uniform row appended here (not stored in model files). We do
not use tfc's own overflow coding: in tfc 2.14.1 its Elias-gamma decode is
unbounded, and a 29-byte crafted stream made OverflowDecode spin forever
(conformance/test_robustness.py). Here every escape costs at most 17 extra symbols and a
stream may carry at most `max_escapes(n)` of them, so decode work is bounded by
the header. Version 1 clamped such latents to the row's range instead, which
cost up to 6 dB on smooth images with a high-rate model (decoder/BITSTREAM.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ESCAPE_BITS = 16                 # an escaped symbol lies 1 .. 2^16 - 1 beyond its row's range
PRECISION = 16
# Two fixed rows appended after a table's own rows: one bit, and a bit length 1..ESCAPE_BITS.
_BIT_ROW = np.array([PRECISION, 0, 1 << 15, 1 << 16], np.int32)
_LEN_ROW = np.array([PRECISION, *range(0, (1 << 16) + 1, (1 << 16) // ESCAPE_BITS)], np.int32)


def max_escapes(n: int) -> int:
    """Escapes allowed in a substream of n symbols (~3 %; real streams use 0.01-0.5 %)."""
    return n // 32 + 16


class CorruptStream(ValueError):
    """The range decoder did not end where the stream ends, or the stream breaks a bound."""


@dataclass(frozen=True)
class CdfTable:
    """tfc's lookup layout: rows of [precision, cdf...] concatenated, plus per-row offset and length."""

    cdf: np.ndarray      # int32, 1-D; every row's precision is positive
    offset: np.ndarray   # int32, one per row: the symbol value of the row's first bin
    length: np.ndarray   # int32, one per row: number of bins, the last being the escape
    coder_cdf: np.ndarray = field(init=False, repr=False)   # cdf + the two escape-payload rows

    def __post_init__(self):
        if np.any(self.length < 2):
            raise ValueError("every CDF row needs a regular bin and an escape bin")
        object.__setattr__(self, "coder_cdf", np.concatenate([self.cdf, _BIT_ROW, _LEN_ROW]).astype(np.int32))

    @property
    def rows(self) -> int:
        return int(self.offset.shape[0])

    @classmethod
    def from_tfc(cls, cdf: np.ndarray, offset: np.ndarray) -> CdfTable:
        """Convert tfc's overflow-enabled tables (negative precision headers); their overflow bin is our escape."""
        cdf = np.asarray(cdf, np.int32).copy()
        heads = np.flatnonzero(cdf < 0)
        if len(heads) != len(offset):
            raise ValueError("CDF table rows do not match offsets")
        ends = np.append(heads[1:], len(cdf))
        length = (ends - heads - 2).astype(np.int32)
        cdf[heads] = -cdf[heads]
        return cls(cdf, np.asarray(offset, np.int32), length)

    def regular_range(self, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) per index: values coded without escape; the row's last bin is the escape."""
        lo = self.offset[indexes].astype(np.int64)
        return lo, lo + self.length[indexes] - 2

    def check_indexes(self, indexes: np.ndarray) -> None:
        """Raise CorruptStream unless every index names one of the table's rows."""
        if indexes.size and (indexes.min() < 0 or indexes.max() >= self.rows):
            raise CorruptStream("CDF index out of range")

    def escaped(self, symbols: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        """Mask of the symbols that need an escape."""
        lo, hi = self.regular_range(indexes)
        return (symbols < lo) | (symbols > hi)

    def clamp(self, symbols: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        """Symbols exactly as `encode` will code them, so the encoder can compute what the decoder will.

        Each symbol is limited to the escape reach (2^16 - 1 beyond its row's regular range), and
        beyond `max_escapes` escapes the ones nearest their range are pulled into it. Anything the
        decoder derives from these symbols (mu and sigma from z; the reconstruction from y) must be
        computed from this result, not from the unclamped values: the 2.00 bpp model at 5,500 steps
        put 792 of 12,288 z latents of kodim20 outside their rows (limit 400), and an encoder that
        ran the hyper-synthesis on the unclamped z wrote a stream that decoded to 5 dB.
        """
        lo, hi = self.regular_range(indexes)
        reach = (1 << ESCAPE_BITS) - 1
        sym = np.clip(symbols, lo - reach, hi + reach).astype(np.int32)
        return _limit_escapes(sym.reshape(-1), lo.reshape(-1), hi.reshape(-1)).reshape(sym.shape)


def _limit_escapes(sym: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Flat symbols with at most max_escapes escapes: the farthest are kept, the rest pulled into range."""
    esc = np.flatnonzero((sym < lo) | (sym > hi))
    if esc.size <= max_escapes(sym.size):
        return sym
    beyond = np.maximum(lo[esc] - sym[esc], sym[esc] - hi[esc])
    keep = esc[np.argsort(-beyond, kind="stable")[:max_escapes(sym.size)]]
    drop = np.setdiff1d(esc, keep)
    out = sym.copy()
    out[drop] = np.clip(sym[drop], lo[drop], hi[drop])
    return out


_RANGE_OPS = None


def _ops():
    """TensorFlow and tfc's range-coder ops (create_range_*, entropy_*_index / _finalize).

    The ops come from tfc's C++ op library alone when tensorflow_compression is not imported yet:
    importing the package also imports tensorflow_probability and Keras, ~0.6 s of a decoder
    process's start-up. The path is built exactly as tfc's gen_ops builds it,
    so a later `import tensorflow_compression` gets the same ops from TensorFlow's library cache.
    """
    global _RANGE_OPS
    import tensorflow as tf
    if _RANGE_OPS is None:
        import sys
        tfc = sys.modules.get("tensorflow_compression")
        if tfc is not None and hasattr(tfc, "create_range_decoder"):
            _RANGE_OPS = tfc
        else:
            import importlib.util
            import os
            spec = importlib.util.find_spec("tensorflow_compression")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("tensorflow_compression is not installed (decoder/requirements.txt)")
            ops_dir = os.path.join(list(spec.submodule_search_locations)[0], "python", "ops")
            _RANGE_OPS = tf.load_op_library(os.path.join(ops_dir, "../../cc/libtensorflow_compression.so"))
    return tf, _RANGE_OPS


def _bit_positions(nbits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each escape with nbits, its nbits-1 payload bits MSB first: (owner escape, bit position)."""
    counts = nbits - 1
    owner = np.repeat(np.arange(len(nbits)), counts)
    starts = np.cumsum(counts) - counts
    pos = np.repeat(counts - 1, counts) - (np.arange(owner.size) - starts[owner])
    return owner, pos


class RangeEncoder:
    """One substream, coded in calls to `add`: each call's regular bins, then that call's escapes.

    `encode` is one call (bitstream v2's z and y substreams); bitstream v3 makes one call per
    slice (models/charm.py), because slice i+1's contexts need slice i's escaped values.
    """

    not_clamped = "symbols not clamped; use CdfTable.clamp first"

    def __init__(self, table: CdfTable):
        tf, tfc = _ops()
        self.table, self._tf, self._tfc = table, tf, tfc
        with tf.device("/CPU:0"):
            self.handle = tfc.create_range_encoder([], table.coder_cdf)

    def add(self, symbols: np.ndarray, indexes: np.ndarray) -> None:
        """Code symbols (int) with the CDF row given by each index; at most `max_escapes` may escape."""
        t = self.table
        idx = np.asarray(indexes, np.int32).reshape(-1)
        sym = np.asarray(symbols, np.int64).reshape(-1)
        lo, hi = t.regular_range(idx)
        esc = np.flatnonzero((sym < lo) | (sym > hi))
        reach = (1 << ESCAPE_BITS) - 1
        if esc.size > max_escapes(sym.size) or np.any(sym < lo - reach) or np.any(sym > hi + reach):
            raise ValueError(self.not_clamped)
        bins = sym - lo
        bins[esc] = t.length[idx[esc]] - 1
        below = sym[esc] < lo[esc]
        excess = np.where(below, lo[esc] - sym[esc], sym[esc] - hi[esc])
        nbits = np.floor(np.log2(excess)).astype(np.int64) + 1 if esc.size else np.zeros(0, np.int64)
        owner, pos = _bit_positions(nbits)
        bit_row, len_row = t.rows, t.rows + 1
        parts = [(idx, bins),
                 (np.full(esc.size, bit_row), below.astype(np.int64)),
                 (np.full(esc.size, len_row), nbits - 1),
                 (np.full(owner.size, bit_row), (excess[owner] >> pos) & 1)]
        with self._tf.device("/CPU:0"):
            for i, s in parts:
                if i.size:
                    self.handle = self._tfc.entropy_encode_index(self.handle, np.asarray(i, np.int32),
                                                                 np.asarray(s, np.int32))

    def finish(self) -> bytes:
        with self._tf.device("/CPU:0"):
            return bytes(self._tfc.entropy_encode_finalize(self.handle).numpy())


class RangeDecoder:
    """Inverse of RangeEncoder; every call to `take` is bounded (index range, escape budget) before its work.

    Each `take` is one traced call (`_traced`) instead of a dozen eager ops: under Python 3.11 every eager
    tensor TensorFlow 2.14 creates keeps ~40 bytes for good (tensorflow#62551), which made a long `--dir`
    batch grow without end (evaluation/BENCH.md, "Batch memory"). The ops and their order are as before.
    """

    too_many = "{n_esc} escapes in {n} symbols (limit {limit})"

    def __init__(self, data: bytes, table: CdfTable):
        tf, tfc = _ops()
        self.table, self._tf, self._tfc = table, tf, tfc
        with tf.device("/CPU:0"):
            self.handle = tfc.create_range_decoder(tf.constant(data, tf.string), _tensors(table)[0])

    def take(self, indexes: np.ndarray) -> np.ndarray:
        """The symbols of one `add`, in the shape of indexes; raises CorruptStream where a bound breaks."""
        idx = np.asarray(indexes, np.int32)
        flat = idx.reshape(-1)
        self.table.check_indexes(flat)
        if not flat.size:
            return np.zeros(idx.shape, np.int32)
        with self._tf.device("/CPU:0"):
            self.handle, packed = _traced()["take"](self.handle, _with_limit(flat), _tensors(self.table)[1])
        return _symbols(self.table, flat, packed.numpy(), self.too_many).reshape(idx.shape)

    def finish(self) -> None:
        """Raises CorruptStream unless the range decoder ended exactly at the end of its substream."""
        with self._tf.device("/CPU:0"):
            ok = bool(self._tfc.entropy_decode_finalize(self.handle).numpy())
        if not ok:
            raise CorruptStream("range decoder did not end at the end of its substream")


def _symbols(t: CdfTable, flat: np.ndarray, packed: np.ndarray, too_many: str) -> np.ndarray:
    """Symbols from one take's packed result [bins, below, bit lengths - 1, payload bits, escapes]."""
    n = flat.size
    n_esc = int(packed[-1])
    if n_esc > max_escapes(n):
        raise CorruptStream(too_many.format(n_esc=n_esc, n=n, limit=max_escapes(n)))
    bins = packed[:n].astype(np.int64)
    below = packed[n:n + n_esc].astype(bool)
    nbits = packed[n + n_esc:n + 2 * n_esc].astype(np.int64) + 1
    bits = packed[n + 2 * n_esc:-1].astype(np.int64)
    esc = np.flatnonzero(bins == t.length[flat] - 1)
    owner, pos = _bit_positions(nbits)
    lo, hi = t.regular_range(flat)
    sym = lo + bins
    excess = (np.int64(1) << (nbits - 1)) + np.bincount(owner, weights=bits << pos, minlength=esc.size).astype(np.int64)
    sym[esc] = np.where(below, lo[esc] - excess, hi[esc] + excess)
    return sym.astype(np.int32)


def _with_limit(flat: np.ndarray) -> np.ndarray:
    """The rows of one take with its escape budget appended: one input tensor instead of two."""
    return np.append(flat, np.int32(max_escapes(flat.size))).astype(np.int32)


def _tensors(table: CdfTable):
    """(coder CDF, row lengths) of a table as tensors, made once per table (not once per stream)."""
    got = table.__dict__.get("_tensors")
    if got is None:
        tf, _ = _ops()
        with tf.device("/CPU:0"):
            got = (tf.constant(table.coder_cdf), tf.constant(table.length))
        object.__setattr__(table, "_tensors", got)
    return got


_TRACED: dict = {}


def _traced() -> dict:
    """The traced range-decoder steps, built once per process: 'take' (handle, rows + budget, lengths) ->
    (handle, packed) and 'decode' (substream, rows + budget, coder CDF, lengths) -> packed + [finalize ok].

    A take decodes the bins, counts the escapes and, only when they are within the budget, decodes their
    sides, bit lengths and payload bits: the same ops, in the same order, as the eager calls were."""
    if _TRACED:
        return _TRACED
    tf, tfc = _ops()

    def take(handle, rows_limit, length):
        rows, limit = rows_limit[:-1], rows_limit[-1]
        handle, bins = tfc.entropy_decode_index(handle, rows, tf.shape(rows), tf.int32)
        n_esc = tf.reduce_sum(tf.cast(tf.equal(bins, tf.gather(length, rows) - 1), tf.int32))
        bit_row = tf.size(length)

        def escapes():
            h, below = tfc.entropy_decode_index(handle, tf.fill([n_esc], bit_row), [n_esc], tf.int32)
            h, lens = tfc.entropy_decode_index(h, tf.fill([n_esc], bit_row + 1), [n_esc], tf.int32)
            payload = tf.reduce_sum(lens)
            h, bits = tfc.entropy_decode_index(h, tf.fill([payload], bit_row), [payload], tf.int32)
            return h, tf.concat([below, lens, bits], 0)

        def refused():                       # over budget: nothing more is decoded (CorruptStream follows)
            return tf.identity(handle), tf.zeros([0], tf.int32)
        handle, rest = tf.cond(n_esc <= limit, escapes, refused)
        return handle, tf.concat([bins, rest, [n_esc]], 0)

    def decode(data, rows_limit, cdf, length):
        handle, packed = take(tfc.create_range_decoder(data, cdf), rows_limit, length)
        ok = tf.cast(tfc.entropy_decode_finalize(handle), tf.int32)
        return tf.concat([packed, [ok]], 0)

    vec = tf.TensorSpec([None], tf.int32)
    _TRACED["take"] = tf.function(take, input_signature=[tf.TensorSpec([], tf.variant), vec, vec], autograph=False)
    _TRACED["decode"] = tf.function(decode, input_signature=[tf.TensorSpec([], tf.string), vec, vec, vec],
                                    autograph=False)
    return _TRACED


def encode(symbols: np.ndarray, indexes: np.ndarray, table: CdfTable) -> bytes:
    """Symbols (int) coded with the CDF row given by each index; out-of-range ones escape.

    Beyond `max_escapes`, the escapes nearest their range are clamped to it (`CdfTable.clamp`
    says what is coded; it keeps the decoder's bound a property of the format, not of the encoder).
    """
    coder = RangeEncoder(table)
    idx = np.asarray(indexes, np.int32).reshape(-1)
    sym = np.asarray(symbols, np.int64).reshape(-1)
    lo, hi = table.regular_range(idx)
    if sym.size and np.any((sym < lo - (1 << ESCAPE_BITS) + 1) | (sym > hi + (1 << ESCAPE_BITS) - 1)):
        raise ValueError("symbol beyond escape reach; clamp with CdfTable.clamp first")
    coder.add(_limit_escapes(sym, lo, hi), idx)
    return coder.finish()


def decode(data: bytes, indexes: np.ndarray, table: CdfTable) -> np.ndarray:
    """Inverse of encode; raises CorruptStream if the stream does not parse exactly or breaks a bound.

    One traced call decodes the whole substream (three tensors per call instead of ~a dozen eager ones,
    see RangeDecoder); the result is what RangeDecoder's take + finish return."""
    idx = np.asarray(indexes, np.int32)
    table.check_indexes(idx)              # before the range decoder is built, as decode always did
    flat = idx.reshape(-1)
    if not flat.size:                     # nothing to take: only the end-of-substream check
        dec = RangeDecoder(data, table)
        dec.finish()
        return np.zeros(idx.shape, np.int32)
    tf, _ = _ops()
    cdf, length = _tensors(table)
    with tf.device("/CPU:0"):
        packed = _traced()["decode"](tf.constant(data, tf.string), _with_limit(flat), cdf, length).numpy()
    out = _symbols(table, flat, packed[:-1], RangeDecoder.too_many)
    if not packed[-1]:
        raise CorruptStream("range decoder did not end at the end of its substream")
    return out.reshape(idx.shape)
