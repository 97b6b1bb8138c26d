"""Stream -> image. Parsing is integer-only; only the synthesis runs in float.

Order of work is chosen so that nothing is allocated before it is bounded:
header fields -> size limits -> CRC -> model -> z -> integer hyper path -> y -> synthesis.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decoder.bitstream import MAX_PIXELS, BitstreamError, Header, parse_header, unpack
from models import charm as CH
from models import scale_table as S
from models.coding import CorruptStream
from models.coding import decode as range_decode
from models.stages import Stages
from models.stages import stage as _stage
from models.synthesis import HALO_LATENTS, TILE_LATENTS, Y_STRIDE, Z_STRIDE, synthesize, to_uint8
from models.weights import DecoderModel, Entry, ModelStore

BACKENDS = ("tf", "jax")

# Optional instrumentation: stages(name) returns a context manager entered around each named stage of a decode:
# "parse" (decode_bytes) with, inside it, "parse.range_decode_z", "parse.hyper_synthesis_int" and
# "parse.range_decode_y" (v2) or "parse.slice_loop" (v3: slice networks and y range decoding, interleaved);
# then "dequantize", "synthesis" and "to_uint8". None (the default) costs nothing and changes nothing.
# evaluation/bench/ops.py times and measures memory with it (models/stages.py).


class DecodeError(ValueError):
    """Any reason a stream cannot be decoded; the message is one line for the user."""


@dataclass(frozen=True)
class Limits:
    """Resource bounds checked from the header before anything is allocated."""

    max_pixels: int = MAX_PIXELS       # decoder/bitstream.py owns the default
    max_bytes: int = 512 << 20         # largest stream file accepted

    def check(self, header: Header) -> None:
        px = header.width * header.height
        if px > self.max_pixels:
            raise DecodeError(f"image {header.width}x{header.height} ({px / 1e6:.0f} MP) exceeds the decoder's "
                              f"limit of {self.max_pixels / 1e6:.0f} MP (--max-pixels)")


def latent_shapes(width: int, height: int, latent_channels: int, hyper_channels: int):
    """Shapes of y and z for an image padded to a multiple of 64."""
    hp, wp = math.ceil(height / Z_STRIDE) * Z_STRIDE, math.ceil(width / Z_STRIDE) * Z_STRIDE
    return ((hp // Y_STRIDE, wp // Y_STRIDE, latent_channels), (hp // Z_STRIDE, wp // Z_STRIDE, hyper_channels))


def estimated_peak_bytes(width: int, height: int, num_filters: int = 128) -> int:
    """Rough bound: whole-image buffers (~40 B/px: float image, uint8 copy, latents,
    indexes) plus a few activations of one synthesis tile at half resolution."""
    side = (TILE_LATENTS + 2 * HALO_LATENTS) * Y_STRIDE
    return 40 * width * height + 4 * (side // 2) ** 2 * num_filters * 4


class ModelCache(ModelStore):
    """The decoder's model store: loads a model only when a stream needs it, once per process.

    backend 'tf' (default) synthesises with TensorFlow; 'jax' with decoder/jax_synthesis.py on whatever
    device JAX finds (GPU parity, conformance/gpu/). The parse is the same integer path either way.
    """

    def __init__(self, registry: str | os.PathLike | None = None, backend: str = "tf"):
        if backend not in BACKENDS:
            raise DecodeError(f"unknown synthesis backend {backend!r}; choose from {', '.join(BACKENDS)}")
        super().__init__(registry)
        self.backend = backend

    def _load(self, entry: Entry) -> DecoderModel:
        model = super()._load(entry)
        if self.backend == "jax":
            from decoder.jax_synthesis import JaxSynthesis
            model.synthesis = JaxSynthesis(model.synthesis.get_weights(), model.widths["num_filters"],
                                           model.widths["latent_channels"])
        else:
            model.synthesis = TracedSynthesis(model.synthesis)
        return model

    def get(self, header: Header) -> DecoderModel:
        return model_for(header, self)

    def slices(self, header: Header):
        """The model's integer slice networks (bitstream v3, models/charm.py), or None for a v2 model."""
        return self.slice_nets(entry_for(header, self))


class TracedSynthesis:
    """models.synthesis.Synthesis run as one tf.function whose input leaves height and width open.

    Eagerly the synthesis creates ~180 tensors per call, and under Python 3.11 every eager tensor
    TensorFlow 2.14 creates keeps ~40 bytes for good (tensorflow#62551): a `--dir` batch grew ~8 MiB per
    1000 streams. Traced, a call creates two (its input and output) and never retraces for a new size.
    Same ops on the same variables, so the same float32 output (tests/test_batch.py, the goldens) and
    `set_weights` still takes effect. Called with a tensor, returns numpy (as JaxSynthesis does), so the
    caller's indexing makes no further tensors.
    """

    def __init__(self, synthesis):
        import tensorflow as tf
        self.plain = synthesis
        spec = tf.TensorSpec([1, None, None, synthesis.shapes[0][3]], tf.float32)
        self._fn = tf.function(synthesis.__call__, input_signature=[spec], autograph=False)

    def __call__(self, y) -> np.ndarray:
        return self._fn(y).numpy()

    def __getattr__(self, name: str):
        return getattr(self.plain, name)          # variables, shapes, steps, get_weights, set_weights


def entry_for(header: Header, models: ModelStore) -> Entry:
    """The registry entry a stream names, checked against the stream's model hash."""
    try:
        entry = models.registry.by_target(header.target_index)
    except KeyError:
        raise DecodeError(f"stream needs model for target index {header.target_index}, "
                          f"which {models.registry.path} does not list") from None
    if entry.hash16 != header.model_hash16:
        raise DecodeError(f"stream was made with model {header.model_hash16:04x}, but the registry's model "
                          f"for this target is {entry.hash[:4]} ({entry.name}): wrong weights")
    return entry


def model_for(header: Header, models: ModelStore) -> DecoderModel:
    """The decoder model of a stream from any store (the decoder's cache, or the encoder's when it verifies)."""
    return models.decoder_model(entry_for(header, models))


@dataclass
class Parsed:
    """The parse result: everything integer, before any float work."""

    header: Header
    z_hat: np.ndarray
    mu_q: np.ndarray
    scale_idx: np.ndarray
    symbols: np.ndarray
    y_hat_q: np.ndarray | None = None     # v3: decoded latents in Q8 (mu_q is then the hyper-synthesis mu)

    def symbol_hash(self) -> str:
        h = hashlib.sha256()
        for a in (self.z_hat, self.scale_idx, self.symbols):
            h.update(np.ascontiguousarray(a, np.int32).tobytes())
        return h.hexdigest()[:16]

    def integer_hashes(self) -> dict:
        """Hashes of every parse-level integer, the figures a conformance run compares across machines
        and settings (`--info`): symbols (z_hat, scale indexes, symbols, as `symbol_hash`), the scale
        indexes and the hyper-synthesis mean alone, and v3's decoded latents y_hat_q (None for v2).
        Arrays are hashed as int64, the digest tests/expected/charm/expected.json pins for y_hat_q."""
        def digest(a: np.ndarray) -> str:
            return hashlib.sha256(np.ascontiguousarray(a, np.int64).tobytes()).hexdigest()[:16]
        return {"version": int(self.header.version), "symbols": self.symbol_hash(),
                "scale_idx": digest(self.scale_idx), "mu_q": digest(self.mu_q),
                "y_hat_q": None if self.y_hat_q is None else digest(self.y_hat_q)}


def parse(data: bytes, models: ModelStore, limits: Limits = Limits(), stages: Stages | None = None) -> Parsed:
    if len(data) > limits.max_bytes:
        raise DecodeError(f"stream of {len(data)} bytes exceeds the {limits.max_bytes} byte limit")
    try:
        header = parse_header(data)
        limits.check(header)
        stream = unpack(data)
    except BitstreamError as e:
        raise DecodeError(str(e)) from None
    entry = entry_for(header, models)
    model, slices = models.decoder_model(entry), models.slice_nets(entry)
    if (header.version == 3) != (slices is not None):
        raise DecodeError(f"stream is bitstream version {header.version}, but the registry's model for this "
                          f"target writes version {3 if slices is not None else 2}")
    m, n = model.widths["latent_channels"], model.widths["num_filters"]
    y_shape, z_shape = latent_shapes(header.width, header.height, m, n)
    try:
        z_idx = np.broadcast_to(np.arange(n, dtype=np.int32), z_shape)
        with _stage(stages, "parse.range_decode_z"):
            z_hat = range_decode(stream.z, z_idx, model.z_table)
        with _stage(stages, "parse.hyper_synthesis_int"):
            mu_q, log2_sigma_q = model.intnet.run(z_hat)
        if slices is not None:                              # v3: the slice loop (decoder/BITSTREAM.md)
            if mu_q.shape != y_shape:
                raise DecodeError(f"model produced latents {mu_q.shape}, expected {y_shape}")
            with _stage(stages, "parse.slice_loop"):
                res = CH.parse_slices(slices, stream.y, model.y_table, mu_q, log2_sigma_q, header.delta_code)
            return Parsed(header, z_hat, mu_q, res.scale_idx, res.symbols, res.y_hat_q)
        idx = S.scale_index(log2_sigma_q, header.delta_code)
        if idx.shape != y_shape:
            raise DecodeError(f"model produced latents {idx.shape}, expected {y_shape}")
        with _stage(stages, "parse.range_decode_y"):
            symbols = range_decode(stream.y, idx, model.y_table)
    except CorruptStream as e:
        raise DecodeError(f"corrupt stream: {e}") from None
    return Parsed(header, z_hat, mu_q, idx, symbols)


def dequantize(parsed: Parsed) -> np.ndarray:
    if parsed.y_hat_q is not None:          # v3: the slice loop's fixed-point latents
        return CH.y_hat_float(parsed.y_hat_q)
    return S.dequantize(parsed.symbols, parsed.mu_q, parsed.header.delta_code)


def decode_bytes(data: bytes, models: ModelCache | None = None, limits: Limits = Limits(),
                 stages: Stages | None = None) -> np.ndarray:
    """Stream bytes -> HxWx3 uint8 RGB. `stages`: optional instrumentation (see `Stages`)."""
    models = models or ModelCache()
    with _stage(stages, "parse"):
        parsed = parse(data, models, limits, stages)
    model = model_for(parsed.header, models)
    with _stage(stages, "dequantize"):
        y_hat = dequantize(parsed)
    with _stage(stages, "synthesis"):
        x = synthesize(model.synthesis, y_hat)
    del y_hat                  # not kept alive through to_uint8 (~0.1 GB at 8K)
    with _stage(stages, "to_uint8"):
        return to_uint8(x, parsed.header.width, parsed.header.height)


def read_stream(path: str | os.PathLike, limits: Limits = Limits()) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise DecodeError(f"{path}: no such file")
    size = p.stat().st_size
    if size > limits.max_bytes:
        raise DecodeError(f"{path}: {size} bytes exceeds the {limits.max_bytes} byte limit")
    return p.read_bytes()
