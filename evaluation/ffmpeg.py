"""The ffmpeg binary shipped by imageio-ffmpeg: discovery, capability probes, VMAF.

One place knows how to find and call ffmpeg, so codecs and metrics agree on the
binary and a missing piece (libx265, libvvenc, libvmaf) turns into a clear skip
note instead of a crash.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# JPEG AI challenge VMAF pipeline: RGB PNG -> YUV 4:4:4 BT.709 limited range.
VMAF_SCALE = "scale=out_color_matrix=bt709:out_range=limited:flags=accurate_rnd+full_chroma_int,format=yuv444p"
VMAF_GRAPH = f"[0:v]{VMAF_SCALE}[dis];[1:v]{VMAF_SCALE}[ref];[dis][ref]libvmaf=log_fmt=json:log_path={{log}}"


class FfmpegError(RuntimeError):
    """ffmpeg exited non-zero; the message carries the tail of its stderr."""


@functools.lru_cache(maxsize=1)
def exe() -> str | None:
    """Path of the imageio-ffmpeg binary, or None when the package is not installed."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - any failure means "no ffmpeg"
        return None


def run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg with args (without the binary); raise FfmpegError on failure."""
    binary = exe()
    if binary is None:
        raise FfmpegError("ffmpeg not available (pip install imageio-ffmpeg)")
    proc = subprocess.run([binary, *args], input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise FfmpegError(f"ffmpeg failed ({proc.returncode}): {' | '.join(tail)}")
    return proc


@functools.cache
def _listing(kind: str) -> str:
    try:
        return run(["-hide_banner", f"-{kind}"]).stdout.decode(errors="replace")
    except FfmpegError:
        return ""


def _names(kind: str) -> set[str]:
    """Names in `ffmpeg -encoders/-decoders/-filters` (second column of each entry line)."""
    names = set()
    for line in _listing(kind).splitlines():
        parts = line.split()
        if len(parts) >= 2 and re.fullmatch(r"[A-Z.|]{2,8}", parts[0]):
            names.add(parts[1])
    return names


def has_encoder(name: str) -> bool:
    return name in _names("encoders")


def has_decoder(name: str) -> bool:
    return name in _names("decoders")


def has_filter(name: str) -> bool:
    return name in _names("filters")


@functools.lru_cache(maxsize=1)
def version() -> str:
    """First line of `ffmpeg -version`, e.g. 'ffmpeg version n9.0.2-...'."""
    try:
        out = run(["-hide_banner", "-version"]).stdout.decode(errors="replace")
    except FfmpegError:
        return "unavailable"
    first = out.splitlines()[0] if out else ""
    return re.sub(r"\s+Copyright.*$", "", first)


def rawvideo_input(width: int | str, height: int | str, pix_fmt: str = "rgb24") -> list[str]:
    """Arguments that read one raw frame from stdin."""
    return ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-i", "pipe:0"]


def decode_to_rgb(data: bytes, fmt: str, vf: str, width: int, height: int) -> np.ndarray:
    """Decode a raw elementary stream (fmt='hevc'/'vvc') into an HxWx3 uint8 RGB array."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"in.{fmt}"
        src.write_bytes(data)
        proc = run(["-hide_banner", "-loglevel", "error", "-f", fmt, "-i", str(src), "-frames:v", "1",
                    "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    buf = np.frombuffer(proc.stdout, dtype=np.uint8)
    if buf.size != width * height * 3:
        raise FfmpegError(f"decoded {buf.size} bytes, expected {width}x{height}x3")
    return buf.reshape(height, width, 3).copy()


def vmaf(ref: np.ndarray, dist: np.ndarray) -> float:
    """VMAF (libvmaf default model) of dist against ref, as the JPEG AI challenge computed it.

    Both images are written as PNG and converted by ffmpeg to YUV 4:4:4 BT.709
    limited range (VMAF_SCALE); libvmaf gets the distorted stream first.
    """
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        Image.fromarray(ref).save(t / "ref.png")
        Image.fromarray(dist).save(t / "dis.png")
        log = t / "vmaf.json"
        run(["-hide_banner", "-loglevel", "error", "-i", str(t / "dis.png"), "-i", str(t / "ref.png"),
             "-lavfi", VMAF_GRAPH.format(log=log), "-f", "null", "-"])
        doc = json.loads(log.read_text())
    return float(doc["pooled_metrics"]["vmaf"]["mean"])


def vmaf_command() -> str:
    """Human-readable VMAF command line for codecs.json / the report."""
    return f"ffmpeg -i dis.png -i ref.png -lavfi \"{VMAF_GRAPH.format(log='vmaf.json')}\" -f null -"
