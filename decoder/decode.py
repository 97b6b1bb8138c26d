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
from models.synthesis import Y_STRIDE, Z_STRIDE

# Synthesis runs on tiles of this many latents (1024 px) with a halo wide enough
# that tiles join without seams (tests/test_tiling.py checks max |diff| <= 1).
TILE_LATENTS = 64
HALO_LATENTS = 6


BACKENDS = ("tf", "jax")


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


class ModelCache:
    """Loads a model only when a stream needs it, once per process.

    backend 'tf' (default) synthesises with TensorFlow; 'jax' with decoder/jax_synthesis.py on whatever
    device JAX finds (issue 19). The parse is the same integer path either way.
    """

    def __init__(self, registry: str | os.PathLike | None = None, backend: str = "tf"):
        from models.weights import load_registry
        if backend not in BACKENDS:
            raise DecodeError(f"unknown synthesis backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.registry = load_registry(registry)
        self.backend = backend
        self._models: dict[int, object] = {}
        self._slices: dict[str, object] = {}

    def get(self, header: Header):
        try:
            entry = self.registry.by_target(header.target_index)
        except KeyError:
            raise DecodeError(f"stream needs model for target index {header.target_index}, "
                              f"which {self.registry.path} does not list") from None
        if entry.hash16 != header.model_hash16:
            raise DecodeError(f"stream was made with model {header.model_hash16:04x}, but the registry's model "
                              f"for this target is {entry.hash[:4]} ({entry.name}): wrong weights")
        if header.target_index not in self._models:
            from models.weights import load_decoder_model
            model = load_decoder_model(entry)
            if self.backend == "jax":
                from decoder.jax_synthesis import JaxSynthesis
                model.synthesis = JaxSynthesis(model.synthesis.get_weights(), model.widths["num_filters"],
                                               model.widths["latent_channels"])
            self._models[header.target_index] = model
        return self._models[header.target_index]

    def slices(self, header: Header):
        """The model's integer slice networks (bitstream v3, models/charm.py), or None for a v2 model."""
        self.get(header)                    # checks the hash and loads the model first
        entry = self.registry.by_target(header.target_index)
        if entry.hash not in self._slices:
            self._slices[entry.hash] = CH.load_from_model(entry.dec_path)
        return self._slices[entry.hash]


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


def parse(data: bytes, models: ModelCache, limits: Limits = Limits()) -> Parsed:
    if len(data) > limits.max_bytes:
        raise DecodeError(f"stream of {len(data)} bytes exceeds the {limits.max_bytes} byte limit")
    try:
        header = parse_header(data)
        limits.check(header)
        stream = unpack(data)
    except BitstreamError as e:
        raise DecodeError(str(e)) from None
    model = models.get(header)
    slices = models.slices(header)
    if (header.version == 3) != (slices is not None):
        raise DecodeError(f"stream is bitstream version {header.version}, but the registry's model for this "
                          f"target writes version {3 if slices is not None else 2}")
    m, n = model.widths["latent_channels"], model.widths["num_filters"]
    y_shape, z_shape = latent_shapes(header.width, header.height, m, n)
    try:
        z_idx = np.broadcast_to(np.arange(n, dtype=np.int32), z_shape)
        z_hat = range_decode(stream.z, z_idx, model.z_table)
        mu_q, log2_sigma_q = model.intnet.run(z_hat)
        if slices is not None:                              # v3: the slice loop (decoder/BITSTREAM.md)
            if mu_q.shape != y_shape:
                raise DecodeError(f"model produced latents {mu_q.shape}, expected {y_shape}")
            res = CH.parse_slices(slices, stream.y, model.y_table, mu_q, log2_sigma_q, header.delta_code)
            return Parsed(header, z_hat, mu_q, res.scale_idx, res.symbols, res.y_hat_q)
        idx = S.scale_index(log2_sigma_q, header.delta_code)
        if idx.shape != y_shape:
            raise DecodeError(f"model produced latents {idx.shape}, expected {y_shape}")
        symbols = range_decode(stream.y, idx, model.y_table)
    except CorruptStream as e:
        raise DecodeError(f"corrupt stream: {e}") from None
    return Parsed(header, z_hat, mu_q, idx, symbols)


def dequantize_symbols(symbols: np.ndarray, mu_q: np.ndarray, delta_code: int) -> np.ndarray:
    """y_hat = s * delta + mu; shared with the encoder so its reconstruction is the decoder's."""
    mu = mu_q.astype(np.float32) / np.float32(1 << S.Q)
    # A crafted stream can carry huge overflow-coded symbols; clamp so the float stage stays finite.
    s = np.clip(symbols, -(1 << 15), 1 << 15).astype(np.float32)
    return s * np.float32(S.delta(delta_code)) + mu


def dequantize(parsed: Parsed) -> np.ndarray:
    if parsed.y_hat_q is not None:          # v3: the slice loop's fixed-point latents
        return CH.y_hat_float(parsed.y_hat_q)
    return dequantize_symbols(parsed.symbols, parsed.mu_q, parsed.header.delta_code)


def _synth_fn(synthesis):
    """The synthesis as a function of a numpy y_hat, run eagerly: it is plain TF ops (models.synthesis),
    so there is no Keras model to build and no graph to trace (issue 17, item 7: ~0.2 s of CPU per
    process). Eager and traced runs of these ops give the same float32 output bit for bit
    (tests/test_synthesis.py), as the Keras model's tf.function did (golden streams: same PNG bytes)."""
    if getattr(synthesis, "backend", "tf") == "jax":
        return synthesis                       # decoder/jax_synthesis.JaxSynthesis: numpy in, numpy out
    import tensorflow as tf
    return lambda y: synthesis(tf.convert_to_tensor(y, tf.float32))


def synthesize(synthesis, y_hat: np.ndarray, tile: int = TILE_LATENTS, halo: int = HALO_LATENTS) -> np.ndarray:
    """y_hat (h, w, M) -> image (16h, 16w, 3) float in 0..1, tiled so memory is bounded."""
    fn = _synth_fn(synthesis)
    h, w, _ = y_hat.shape
    if h <= tile + halo and w <= tile + halo:
        return np.asarray(fn(y_hat[None])[0])
    out = np.empty((h * Y_STRIDE, w * Y_STRIDE, 3), np.float32)
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            y0, x0 = max(ty - halo, 0), max(tx - halo, 0)
            y1, x1 = min(ty + tile + halo, h), min(tx + tile + halo, w)
            part = np.asarray(fn(y_hat[None, y0:y1, x0:x1])[0])
            oy, ox = (ty - y0) * Y_STRIDE, (tx - x0) * Y_STRIDE
            th, tw = (min(ty + tile, h) - ty) * Y_STRIDE, (min(tx + tile, w) - tx) * Y_STRIDE
            out[ty * Y_STRIDE:ty * Y_STRIDE + th, tx * Y_STRIDE:tx * Y_STRIDE + tw] = part[oy:oy + th, ox:ox + tw]
    return out


def to_uint8(x: np.ndarray, width: int, height: int, band: int = 256) -> np.ndarray:
    """Crop and round to 8 bits, in row bands so no full-size float temporaries exist (-1 GB at 8K)."""
    x = x[:height, :width]
    out = np.empty(x.shape, np.uint8)
    for r in range(0, x.shape[0], band):
        b = np.nan_to_num(x[r:r + band], nan=0.0, posinf=1.0, neginf=0.0)
        out[r:r + band] = np.clip(np.round(b * 255.0), 0, 255)
    return out


def decode_bytes(data: bytes, models: ModelCache | None = None, limits: Limits = Limits()) -> np.ndarray:
    """Stream bytes -> HxWx3 uint8 RGB."""
    models = models or ModelCache()
    parsed = parse(data, models, limits)
    model = models.get(parsed.header)
    x = synthesize(model.synthesis, dequantize(parsed))
    return to_uint8(x, parsed.header.width, parsed.header.height)


def read_stream(path: str | os.PathLike, limits: Limits = Limits()) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise DecodeError(f"{path}: no such file")
    size = p.stat().st_size
    if size > limits.max_bytes:
        raise DecodeError(f"{path}: {size} bytes exceeds the {limits.max_bytes} byte limit")
    return p.read_bytes()
