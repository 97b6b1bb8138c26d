"""Image -> latents once per model, then cheap re-quantisation per rate probe.

`Analysed` holds everything that does not depend on the quantiser step delta:
y, the coded z, and the integer hyper outputs. A probe at a new delta only
re-quantises y and range-codes it, so a rate search costs one analysis per
candidate model plus a few entropy-coding passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from decoder import bitstream as B
from encoder.refine import DELTA_PROBE, Refined, refine_latents
from models import charm as CH
from models import coding
from models import scale_table as S
from models.intnet import Z_MAX
from models.stages import Stages, stage
from models.synthesis import Y_STRIDE, Z_STRIDE, synthesize, to_uint8
from models.weights import DecoderModel, Entry, ModelStore, load_encoder_transforms

# The analysis runs on tiles of this many pixels (multiples of 64) with a halo of
# 64 px (4 latents) -- wider than its receptive field (+-30 px) -- so memory is
# bounded at any resolution and y matches the untiled transform.
TILE_PX = 1024
HALO_PX = 64


def pad_to_multiple(rgb: np.ndarray, multiple: int = Z_STRIDE) -> np.ndarray:
    """Edge-replicate to a multiple of 64; replication (not zeros) avoids a dark border after cropping."""
    h, w = rgb.shape[:2]
    ph, pw = math.ceil(h / multiple) * multiple - h, math.ceil(w / multiple) * multiple - w
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")


class EncoderModel:
    """Decoder model + the encoder-only transforms; analysis runs as one tf.function."""

    def __init__(self, entry: Entry, decoder_model: DecoderModel, slices=None, owner: EncoderModels | None = None):
        import tensorflow as tf
        self.owner = owner                    # the model set, whose `stages` (if any) times this model's work
        self.entry = entry
        self.dec = decoder_model
        self.analysis, self.hyper_analysis = load_encoder_transforms(entry)
        self.slices = slices                  # bitstream v3's slice networks (models.charm.IntCharm), or None (v2)

        spec = [tf.TensorSpec([1, None, None, None], tf.float32)]
        self._g_a = tf.function(lambda x: self.analysis(x), input_signature=spec)
        self._h_a = tf.function(lambda y: self.hyper_analysis(y), input_signature=spec)

    def stage(self, name: str):
        """Context manager around a named step: the owner's instrumentation, or nothing (models/stages.py)."""
        return stage(self.owner.stages if self.owner is not None else None, name)

    def transform(self, rgb: np.ndarray, tile: int = TILE_PX, halo: int = HALO_PX) -> np.ndarray:
        """Padded image -> y, tile by tile when it is large."""
        with self.stage("analysis.g_a"):
            return self._transform(rgb, tile, halo)

    def _transform(self, rgb: np.ndarray, tile: int, halo: int) -> np.ndarray:
        x = pad_to_multiple(rgb).astype(np.float32) / np.float32(255.0)
        hp, wp = x.shape[:2]
        if hp <= tile + 2 * halo and wp <= tile + 2 * halo:
            return self._g_a(x[None])[0].numpy()
        y = None
        for ty in range(0, hp, tile):
            for tx in range(0, wp, tile):
                y0, x0 = max(ty - halo, 0), max(tx - halo, 0)
                y1, x1 = min(ty + tile + halo, hp), min(tx + tile + halo, wp)
                part = self._g_a(x[None, y0:y1, x0:x1])[0].numpy()
                if y is None:
                    y = np.empty((hp // Y_STRIDE, wp // Y_STRIDE, part.shape[-1]), np.float32)
                oy, ox = (ty - y0) // Y_STRIDE, (tx - x0) // Y_STRIDE
                th, tw = (min(ty + tile, hp) - ty) // Y_STRIDE, (min(tx + tile, wp) - tx) // Y_STRIDE
                y[ty // Y_STRIDE:ty // Y_STRIDE + th, tx // Y_STRIDE:tx // Y_STRIDE + tw] = part[oy:oy + th, ox:ox + tw]
        return y

    def analyse(self, rgb: np.ndarray) -> Analysed:
        """Everything that does not depend on delta: g_a, h_a, the coded z and the integer hyper path."""
        with self.stage("analysis"):
            return self._analyse(rgb)

    def _analyse(self, rgb: np.ndarray) -> Analysed:
        h, w = rgb.shape[:2]
        y = self.transform(rgb)
        return Analysed(self, w, h, y, *self.side_info(self.hyper_analyse(y)))

    def hyper_analyse(self, y: np.ndarray) -> np.ndarray:
        """z before rounding (refinement starts from it)."""
        return self._h_a(y[None])[0].numpy()

    def side_info(self, z: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
        """z rounded, clamped and coded, and the integer hyper path on it: (z bytes, mu_q, log2_sigma_q)."""
        z_idx = np.broadcast_to(np.arange(z.shape[-1], dtype=np.int32), z.shape)
        z_hat = self.dec.z_table.clamp(np.clip(np.round(z), -Z_MAX, Z_MAX), z_idx)
        with self.stage("range_encode"):
            z_bytes = coding.encode(z_hat, z_idx, self.dec.z_table)
        with self.stage("analysis.hyper_synthesis_int"):
            mu_q, log2_sigma_q = self.dec.intnet.run(z_hat)
        return z_bytes, mu_q, log2_sigma_q


@dataclass
class Analysed:
    model: EncoderModel
    width: int
    height: int
    y: np.ndarray
    z_bytes: bytes
    mu_q: np.ndarray
    log2_sigma_q: np.ndarray

    def sliced(self, delta_code: int):
        """v3: the slice loop's result (symbols as coded, indexes, y_hat_q), computed as the decoder will."""
        return CH.quantise_slices(self.model.slices, self.y, self.model.dec.y_table, self.mu_q, self.log2_sigma_q,
                                  delta_code)

    def symbols(self, delta_code: int) -> tuple[np.ndarray, np.ndarray]:
        if self.model.slices is not None:
            r = self.sliced(delta_code)
            return r.symbols, r.scale_idx
        mu = self.mu_q.astype(np.float32) / np.float32(1 << S.Q)
        s = np.round((self.y - mu) / np.float32(S.delta(delta_code)))
        idx = S.scale_index(self.log2_sigma_q, delta_code)
        return self.model.dec.y_table.clamp(np.clip(s, -(1 << 30), 1 << 30), idx), idx

    def code(self, delta_code: int, target_index: int) -> bytes:
        """The stream at this delta: quantise, range-code y, pack (one per rate probe)."""
        with self.model.stage("code"):
            return self._code(delta_code, target_index)

    def _code(self, delta_code: int, target_index: int) -> bytes:
        if self.model.slices is not None:
            _, y_bytes = CH.code_slices(self.model.slices, self.y, self.model.dec.y_table, self.mu_q,
                                        self.log2_sigma_q, delta_code)
            header = B.Header(target_index, self.model.entry.hash16, self.width, self.height, delta_code, 3)
            return B.pack(header, self.z_bytes, y_bytes)
        s, idx = self.symbols(delta_code)
        with self.model.stage("range_encode"):
            y_bytes = coding.encode(s, idx, self.model.dec.y_table)
        header = B.Header(target_index, self.model.entry.hash16, self.width, self.height, delta_code)
        return B.pack(header, self.z_bytes, y_bytes)

    def refined(self, rgb: np.ndarray, delta_code: int, bit_budget: float, iters: int,
                here: tuple[float, float] | None = None) -> tuple[Analysed, Refined] | None:
        """This analysis with y and z refined for this delta code (encoder/refine.py), or None where refinement
        does not apply (v3's integer slice nets give no gradient; an image whose rate does not fall with delta).
        `here`: (bpp, MSE) at this delta code, if the caller has them, so they are not computed again."""
        if self.model.slices is not None or iters <= 0:
            return None
        with self.model.stage("refine"):
            lam = self.slope(rgb, delta_code, here)
            if not lam > 0:
                return None
            dec = self.model.dec
            dtype = self.model.owner.refine_dtype if self.model.owner is not None else "auto"
            r = refine_latents(dec.synthesis, dec.intnet, dec.z_table, rgb, self.y, self.model.hyper_analyse(self.y),
                               delta_code, lam, bit_budget, iters, compute_dtype=dtype)
            z_bytes, mu_q, log2_sigma_q = self.model.side_info(r.z)
            return replace(self, y=r.y, z_bytes=z_bytes, mu_q=mu_q, log2_sigma_q=log2_sigma_q), r

    def slope(self, rgb: np.ndarray, delta_code: int, here: tuple[float, float] | None = None) -> float:
        """-dMSE/dbpp of this image around this delta code, from real bytes and the decoder's output;
        `here` is (bpp, MSE) at delta_code when already known."""
        lo = min(delta_code, S.DELTA_CODE_MAX - DELTA_PROBE)
        points = []
        for code in (lo, lo + DELTA_PROBE):
            if code == delta_code and here is not None:
                points.append(here)
                continue
            bpp = 8 * len(self._code(code, 0)) / (self.width * self.height)
            err = self._reconstruct(code).astype(np.float64) - rgb
            points.append((bpp, float(np.mean(err * err))))
        (b0, m0), (b1, m1) = points
        return (m1 - m0) / (b0 - b1) if b0 != b1 else float("nan")

    def reconstruct(self, delta_code: int) -> np.ndarray:
        """What the decoder will output for this delta (used to compare candidates' quality)."""
        with self.model.stage("reconstruct"):
            return self._reconstruct(delta_code)

    def _reconstruct(self, delta_code: int) -> np.ndarray:
        if self.model.slices is not None:
            y_hat = CH.y_hat_float(self.sliced(delta_code).y_hat_q)
            return to_uint8(synthesize(self.model.dec.synthesis, y_hat), self.width, self.height)
        s, _ = self.symbols(delta_code)
        y_hat = S.dequantize(s, self.mu_q, delta_code)
        return to_uint8(synthesize(self.model.dec.synthesis, y_hat), self.width, self.height)


class EncoderModels(ModelStore):
    """The encoder's model set: loads a model (both halves) only when the search needs it. Its decoder
    halves are the ones rate_control's verifying parse uses, so each file loads once."""

    def __init__(self, registry=None, stages: Stages | None = None):
        super().__init__(registry)
        self.stages = stages                  # optional instrumentation (models/stages.py), read at each step
        self.refine_dtype = "auto"            # the refinement's convolution dtype (encoder.refine.resolve_dtype)
        self._enc: dict[str, EncoderModel] = {}

    def encoder_model(self, entry: Entry) -> EncoderModel:
        if entry.hash not in self._enc:
            self._enc[entry.hash] = EncoderModel(entry, self.decoder_model(entry), self.slice_nets(entry), self)
        return self._enc[entry.hash]

    def distinct_entries(self) -> list[Entry]:
        """One entry per distinct model file, in target order (targets sharing weights collapse)."""
        seen, out = set(), []
        for e in self.registry.entries:
            if e.hash not in seen:
                seen.add(e.hash)
                out.append(e)
        return out
