"""Anchor codecs and the `ours` plugin behind one small interface.

An anchor codec only knows how to turn RGB + one quality knob into bytes and
back; how the knob is searched to hit a target rate lives in
`evaluation.ratematch`, shared by all of them. Each codec also says whether it
can run here (`unavailable()` -> reason or None), its library versions and the
exact parameters / command line, which end up in codecs.json.
"""

from __future__ import annotations

import io
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, features

from evaluation import ffmpeg

ALL_CODECS = ("ours", "jpeg", "jpeg2000", "webp", "avif", "hevc", "vvc")


@dataclass(frozen=True)
class Knob:
    """A codec's quality parameter and how the rate moves with it.

    increasing: True when a larger value gives more bits (JPEG quality), False
    when it gives fewer (a QP). integer: search over whole numbers.
    proportional: the knob is (roughly) the rate itself, so the search may start
    at the target and rescale instead of bisecting (JPEG 2000 bpp request).
    """

    name: str
    lo: float
    hi: float
    integer: bool = True
    increasing: bool = True
    proportional: bool = False


class Codec:
    """Base class: an anchor codec driven by a single knob."""

    name: str = ""
    ext: str = ""
    knob: Knob
    rate_controlled: bool = False  # True for codecs that hit a target bpp themselves (ours)

    def unavailable(self) -> str | None:
        """None if the codec can run here, else a one-line reason for the skip note."""
        return None

    def version(self) -> str:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Exact parameters / command lines, recorded in codecs.json."""
        raise NotImplementedError

    def encode(self, rgb: np.ndarray, knob: float) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, height: int, width: int) -> np.ndarray:
        """Decode to HxWx3 uint8 RGB (height/width let stream formats crop padding)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- Pillow


class _PillowCodec(Codec):
    fmt: str = ""
    feature: str = ""
    params: dict[str, Any] = {}

    def unavailable(self) -> str | None:
        if not features.check(self.feature):
            return f"Pillow was built without {self.feature} support"
        return None

    def _save_kwargs(self, knob: float) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self, rgb: np.ndarray, knob: float) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, format=self.fmt, **self._save_kwargs(knob))
        return buf.getvalue()

    def decode(self, data: bytes, height: int, width: int) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            out = np.asarray(im.convert("RGB"))
        return out

    def settings(self) -> dict[str, Any]:
        example = self._save_kwargs(self.knob.hi)
        return {"call": f"PIL.Image.save(fp, format={self.fmt!r}, **params)",
                "params_at_knob_hi": example, "knob": self.knob.__dict__}


class Jpeg(_PillowCodec):
    name, ext, fmt, feature = "jpeg", "jpg", "JPEG", "jpg"
    knob = Knob("quality", 1, 100, integer=True, increasing=True)

    def _save_kwargs(self, knob: float) -> dict[str, Any]:
        return {"quality": int(knob), "subsampling": 2, "optimize": False}  # 2 = 4:2:0

    def version(self) -> str:
        lib = "libjpeg-turbo" if features.check_feature("libjpeg_turbo") else "libjpeg"
        ver = features.version("libjpeg_turbo") if lib == "libjpeg-turbo" else features.version("jpg")
        return f"Pillow {Image.__version__}, {lib} {ver}"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(),
                "description": "Pillow JPEG baseline, 4:2:0, standard IJG tables, optimize=False"}


class Jpeg2000(_PillowCodec):
    """The knob is the requested bpp: OpenJPEG's compression ratio is 24 / knob."""

    name, ext, fmt, feature = "jpeg2000", "j2k", "JPEG2000", "jpg_2000"
    knob = Knob("requested_bpp", 0.002, 24.0, integer=False, increasing=True, proportional=True)

    def _save_kwargs(self, knob: float) -> dict[str, Any]:
        return {"quality_mode": "rates", "quality_layers": [24.0 / float(knob)], "irreversible": True,
                "mct": 1, "no_jp2": True}

    def version(self) -> str:
        return f"Pillow {Image.__version__}, OpenJPEG {features.version('jpg_2000')}"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(),
                "description": "Pillow/OpenJPEG raw .j2k codestream, quality_mode='rates' (single layer, "
                               "ratio = 24 / requested_bpp), irreversible 9/7, mct=1, default resolutions "
                               "and code-blocks"}


class Webp(_PillowCodec):
    name, ext, fmt, feature = "webp", "webp", "WEBP", "webp"
    knob = Knob("quality", 0, 100, integer=True, increasing=True)

    def _save_kwargs(self, knob: float) -> dict[str, Any]:
        return {"quality": int(knob), "method": 6, "lossless": False}

    def version(self) -> str:
        return f"Pillow {Image.__version__}, libwebp {features.version('webp')}"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "description": "Pillow WebP lossy, method=6, 4:2:0, default filters"}


class Avif(_PillowCodec):
    name, ext, fmt, feature = "avif", "avif", "AVIF", "avif"
    knob = Knob("quality", 0, 100, integer=True, increasing=True)

    def _save_kwargs(self, knob: float) -> dict[str, Any]:
        return {"quality": int(knob), "speed": 6, "subsampling": "4:2:0"}

    def version(self) -> str:
        extra = ""
        try:
            from PIL import _avif

            extra = f", {_avif.codec_versions()}"
        except Exception:  # noqa: BLE001 - version detail is optional
            pass
        return f"Pillow {Image.__version__}, libavif {features.version('avif')}{extra}"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(),
                "description": "Pillow AVIF (libavif), quality 0..100, speed=6, 4:2:0, default encoder"}


# --------------------------------------------------------------------------- ffmpeg

_TO_YUV = "scale=out_color_matrix=bt709:out_range=full:flags=accurate_rnd+full_chroma_int,format={pix}"
_TO_RGB = "scale=in_color_matrix=bt709:in_range=full:flags=accurate_rnd+full_chroma_int,format=rgb24"
_VUI = ["-color_range", "pc", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]


class _FfmpegCodec(Codec):
    """Single intra frame through ffmpeg: RGB -> YCbCr BT.709 full range -> encoder -> raw stream."""

    encoder: str = ""
    decoder: str = ""
    stream_fmt: str = ""
    pix_fmt: str = ""
    pad_even: bool = False  # 4:2:0 needs even sizes: replicate the last row/column, crop after decoding
    description: str = ""

    def unavailable(self) -> str | None:
        if ffmpeg.exe() is None:
            return "ffmpeg binary not found (pip install imageio-ffmpeg)"
        missing = []
        if not ffmpeg.has_encoder(self.encoder):
            missing.append(f"encoder {self.encoder}")
        if not ffmpeg.has_decoder(self.decoder):
            missing.append(f"decoder {self.decoder}")
        if missing:
            return f"ffmpeg ({ffmpeg.version()}) lacks {', '.join(missing)}"
        return None

    def _codec_args(self, qp: str) -> list[str]:
        """Encoder arguments for one QP (a string, so codecs.json can show a '{QP}' template)."""
        raise NotImplementedError

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        if not self.pad_even:
            return height, width
        return height + height % 2, width + width % 2

    def encode_args(self, width: int | str, height: int | str, qp: str) -> list[str]:
        """Full ffmpeg argument list (stdin: raw RGB of the padded size, stdout: the stream)."""
        return ["-hide_banner", "-loglevel", "error", *ffmpeg.rawvideo_input(width, height), "-frames:v", "1",
                "-vf", _TO_YUV.format(pix=self.pix_fmt), *_VUI, *self._codec_args(qp),
                "-f", self.stream_fmt, "pipe:1"]

    def encode(self, rgb: np.ndarray, knob: float) -> bytes:
        h, w = rgb.shape[:2]
        ph, pw = self._padded(h, w)
        if (ph, pw) != (h, w):
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        proc = ffmpeg.run(self.encode_args(pw, ph, str(int(knob))), stdin=np.ascontiguousarray(rgb).tobytes())
        return proc.stdout

    def decode(self, data: bytes, height: int, width: int) -> np.ndarray:
        ph, pw = self._padded(height, width)
        out = ffmpeg.decode_to_rgb(data, self.stream_fmt, _TO_RGB, pw, ph)
        return out[:height, :width].copy()

    def _encoder_version(self) -> str:
        raise NotImplementedError

    def version(self) -> str:
        return f"{ffmpeg.version()}, {self._encoder_version()}, dec: ffmpeg native {self.decoder}"

    def settings(self) -> dict[str, Any]:
        enc = ["ffmpeg", *self.encode_args("{W}", "{H}", "{QP}")]
        dec = ["ffmpeg", "-f", self.stream_fmt, "-i", f"in.{self.ext}", "-frames:v", "1", "-vf", _TO_RGB,
               "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        return {"description": self.description, "encode_command": shlex.join(enc), "decode_command": shlex.join(dec),
                "color": "RGB -> YCbCr BT.709 full range (swscale accurate_rnd), VUI pc/bt709; decoded with "
                         "the same matrix" + ("; odd W/H padded by edge replication, cropped after decoding"
                                              if self.pad_even else ""),
                "ffmpeg": ffmpeg.exe(), "knob": self.knob.__dict__}

    def _probe_stderr(self, args: list[str]) -> str:
        """stderr of a tiny 64x64 test encode at info log level (encoders print their version there)."""
        binary = ffmpeg.exe()
        if binary is None:
            return ""
        cmd = [binary, "-hide_banner", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=1", "-frames:v", "1",
               "-vf", _TO_YUV.format(pix=self.pix_fmt), *args, "-f", self.stream_fmt, "-y", "/dev/null"]
        try:
            return subprocess.run(cmd, capture_output=True, check=False, timeout=60).stderr.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            return ""


class Hevc(_FfmpegCodec):
    """x265 Main 4:4:4 intra, constant QP (qp=Q in x265-params), preset medium, other defaults."""

    name, ext = "hevc", "hevc"
    description = ("ffmpeg libx265, Main 4:4:4 8-bit (yuv444p), single intra frame, raw Annex-B .hevc, preset medium, "
                   "constant QP via x265-params qp=Q (integer search 0..51), info=0 (no ~2 KB encoder-settings "
                   "SEI, which is not needed to decode), other x265 defaults (psy-rd on); RGB<->YCbCr BT.709 "
                   "full range")
    encoder, decoder, stream_fmt, pix_fmt = "libx265", "hevc", "hevc", "yuv444p"
    knob = Knob("qp", 0, 51, integer=True, increasing=False)

    def _codec_args(self, qp: str) -> list[str]:
        return ["-c:v", "libx265", "-preset", "medium", "-x265-params", f"qp={qp}:info=0:log-level=error"]

    def _encoder_version(self) -> str:
        for line in self._probe_stderr(["-c:v", "libx265", "-x265-params", "qp=30"]).splitlines():
            if "encoder version" in line:
                return "x265 " + line.split("encoder version", 1)[1].strip()
        return "x265 (version unknown)"


class Vvc(_FfmpegCodec):
    """vvenc Main10 4:2:0 intra, -qp Q with perceptual QPA off, preset faster, full-range VUI."""

    name, ext = "vvc", "266"
    description = ("ffmpeg libvvenc, Main10 4:2:0 (yuv420p10le: the only format this libvvenc accepts), single "
                   "intra frame, raw .266, preset faster, -qp Q (integer search 4..63; QP < 4 fails in this build "
                   "and QP 4 is already > 7 bpp), -qpa 0, VideoFullRange=1; RGB<->YCbCr BT.709 full range, "
                   "odd W/H padded by edge replication and cropped after decoding")
    encoder, decoder, stream_fmt, pix_fmt = "libvvenc", "vvc", "vvc", "yuv420p10le"
    pad_even = True
    knob = Knob("qp", 4, 63, integer=True, increasing=False)  # this libvvenc build fails for QP < 4 (QP 4 is > 7 bpp)

    def _codec_args(self, qp: str) -> list[str]:
        return ["-c:v", "libvvenc", "-preset", "faster", "-qp", qp, "-qpa", "0",
                "-vvenc-params", "VideoFullRange=1"]

    def _encoder_version(self) -> str:
        for line in self._probe_stderr(["-c:v", "libvvenc", "-qp", "40"]).splitlines():
            if "libvvenc version" in line:
                return "libvvenc " + line.split("libvvenc version:", 1)[-1].strip()
        return "libvvenc (version unknown)"


# --------------------------------------------------------------------------- ours


class Ours(Codec):
    """The ratelock codec: encoder.api.Encoder does its own rate control, one call per target."""

    name, ext = "ours", "rlk"
    rate_controlled = True
    knob = Knob("delta", 0, 0)

    def __init__(self, registry: str | None = None, refine: int = 0) -> None:
        self.registry = registry
        self.refine = refine             # latent-refinement steps (encoder/refine.py); 0 = off
        self._encoder: Any = None
        self._decode: Any = None
        self._reason: str | None = None
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            from encoder.api import Encoder
        except Exception as exc:  # noqa: BLE001 - any import problem is a skip, never a crash
            self._reason = f"encoder.api not importable ({type(exc).__name__}: {exc})"
            return
        try:
            from decoder.api import decode_bytes
        except Exception as exc:  # noqa: BLE001
            self._reason = f"decoder.api not importable ({type(exc).__name__}: {exc})"
            return
        try:
            self._encoder = Encoder(self.registry, refine=self.refine)
        except Exception as exc:  # noqa: BLE001
            self._reason = f"encoder.api.Encoder({self.registry!r}) failed ({type(exc).__name__}: {exc})"
            return
        self._decode = decode_bytes

    def unavailable(self) -> str | None:
        self._load()
        return self._reason

    def version(self) -> str:
        """Model hashes plus a hash of the codec's source: new weights or new rate control make old points stale."""
        import hashlib

        from models.targets import TARGETS
        from models.weights import load_registry
        try:
            models = ", ".join(f"{TARGETS[e.target_index]:.2f}:{e.name}@{e.hash}"
                               for e in load_registry(self.registry).entries)
        except Exception as exc:  # noqa: BLE001 - unavailable() reports the real reason
            models = f"registry unreadable ({type(exc).__name__})"
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent.parent
        for sub in ("encoder", "rate_control", "decoder", "models"):
            for f in sorted((root / sub).glob("*.py")):
                h.update(f.name.encode() + f.read_bytes())
        return f"ratelock (code {h.hexdigest()[:8]}; models {models})"

    def settings(self) -> dict[str, Any]:
        return {"call": "encoder.api.Encoder(registry, refine=refine).encode(rgb, target_bpp); "
                        "decoder.api.decode_bytes(data)",
                "registry": self.registry, "refine": self.refine, "rate_control": "codec's own (one call per target)"}

    def encode_target(self, rgb: np.ndarray, target: float) -> tuple[bytes, dict[str, Any]]:
        """One rate-controlled encode; returns the bitstream and what the encoder reported."""
        self._load()
        res = self._encoder.encode(rgb, target)
        info = {"model": str(getattr(res, "model", "")), "delta": float(getattr(res, "delta", float("nan"))),
                "reported_bpp": float(getattr(res, "bpp", float("nan"))),
                "reported_within_band": bool(getattr(res, "within_band", False))}
        for extra in ("probes", "analyses"):  # search effort, when the encoder reports it
            if isinstance(getattr(res, extra, None), int):
                info[extra] = getattr(res, extra)
        if getattr(res, "refinement", None) is not None:
            info["refine_db"] = res.refinement.gain_db
        return bytes(res.data), info

    def decode(self, data: bytes, height: int, width: int) -> np.ndarray:
        self._load()
        out = self._decode(data, registry=self.registry) if self.registry else self._decode(data)
        return np.asarray(out, dtype=np.uint8)


def make(name: str, registry: str | None = None, refine: int = 0) -> Codec:
    """Codec instance by CLI name (`registry` and `refine` concern ours only)."""
    table: dict[str, type[Codec]] = {"jpeg": Jpeg, "jpeg2000": Jpeg2000, "webp": Webp, "avif": Avif,
                                     "hevc": Hevc, "vvc": Vvc}
    if name == "ours":
        return Ours(registry, refine)
    if name not in table:
        raise KeyError(name)
    return table[name]()
