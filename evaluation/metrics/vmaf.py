"""VMAF on 10-bit YUV 4:4:4, the JPEG AI reference's call of libvmaf, through the project's ffmpeg."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from evaluation.metrics.yuv import Planes

PIX_FMT = "yuv444p10le"


def _write_yuv(path: Path, planes: Planes) -> None:
    planes.yuv.astype("<u2").tofile(path)  # planar Y, U, V; 10-bit codes in 16-bit little-endian words


def vmaf_planes(ref: Planes, dist: Planes) -> float:
    """VMAF (libvmaf default model vmaf_v0.6.1) of the 10-bit BT.709 full-range YUV 4:4:4 planes.

    The reference writes both images as raw 10-bit 4:4:4 YUV and runs the vmaf tool with
    `-p 444 -b 10`; here the same raw planes go to ffmpeg's libvmaf filter (distorted first), so no
    colour conversion happens outside to_planes. Needs ffmpeg with libvmaf (imageio-ffmpeg).
    """
    from evaluation import ffmpeg  # lazy: it is the one place that knows the ffmpeg binary

    h, w = ref.yuv.shape[1:]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _write_yuv(t / "dis.yuv", dist)
        _write_yuv(t / "ref.yuv", ref)
        log = t / "vmaf.json"
        ffmpeg.run(["-hide_banner", "-loglevel", "error",
                    *ffmpeg.rawvideo_input(w, h, PIX_FMT)[:-1], str(t / "dis.yuv"),
                    *ffmpeg.rawvideo_input(w, h, PIX_FMT)[:-1], str(t / "ref.yuv"),
                    "-lavfi", f"[0:v][1:v]libvmaf=log_fmt=json:log_path={log}", "-f", "null", "-"])
        doc = json.loads(log.read_text())
    return float(doc["pooled_metrics"]["vmaf"]["mean"])


def vmaf_command() -> str:
    """Human-readable command line of vmaf_planes, for the report."""
    raw = f"-f rawvideo -pix_fmt {PIX_FMT} -s WxH"
    return f"ffmpeg {raw} -i dis.yuv {raw} -i ref.yuv -lavfi \"[0:v][1:v]libvmaf=log_fmt=json\" -f null -"

