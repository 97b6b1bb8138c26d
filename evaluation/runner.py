"""Runs every (codec, image, target), with a per-point JSON cache so runs can resume.

The cache key holds everything that changes a result (image size and crop,
codec version and settings, whether VMAF was computed), so a stale file is
recomputed instead of silently reused.

Each point carries two metric sets: the project's earlier columns (psnr_rgb,
psnr_y = BT.601 float luma, msssim_y, msssim_rgb, vmaf = the challenge's 8-bit
limited-range pipeline) and the JPEG AI set as jai_<name> (evaluation.metrics,
10-bit BT.709 YUV 4:4:4).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evaluation import ffmpeg, metrics
from evaluation.codecs import Codec
from evaluation.ratematch import TrialCache, match_rate
from models.targets import rate_code, within_band

IMAGE_SUFFIXES = (".png", ".ppm", ".pnm", ".bmp", ".tif", ".tiff")
JAI_FIELDS = tuple(f"jai_{name}" for name in metrics.JPEG_AI_NAMES)  # the JPEG AI set, one column each
CSV_FIELDS = ("codec", "image", "target", "bpp", "within_band", "knob", "psnr_rgb", "psnr_y", "msssim_y",
              "msssim_rgb", "vmaf", *JAI_FIELDS, "enc_s", "dec_s", "calls")
CACHE_VERSION = 2  # 2: rows carry the JPEG AI set


@dataclass
class RunLog:
    """Things the report must mention: skipped codecs, failures, metric caveats."""

    skipped: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache_hits: int = 0
    computed: int = 0
    # (image, codec, target, "note" | "failure", text) of what one point said: a merge of shards puts them
    # back in the order one run would have (evaluation/shards.py)
    points: list[tuple[str, str, float, str, str]] = field(default_factory=list)

    def point(self, image: str, codec: str, target: float, text: str, failure: bool = False) -> None:
        (self.failures if failure else self.notes).append(text)
        self.points.append((image, codec, target, "failure" if failure else "note", text))


def list_images(folder: Path, limit: int | None = None) -> list[Path]:
    """Lossless images in folder, sorted by name, at most `limit`."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:limit] if limit else files


def load_image(path: Path, crop: int | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB; with `crop`, the centred crop x crop window (smaller sides are kept)."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    if crop:
        h, w = rgb.shape[:2]
        ch, cw = min(crop, h), min(crop, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        rgb = rgb[y0:y0 + ch, x0:x0 + cw]
    return np.ascontiguousarray(rgb)


def codec_key(codec: Codec) -> str:
    """Short hash of a codec's version and settings: a cached result from other settings is stale."""
    blob = json.dumps({"v": codec.version(), "s": codec.settings()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(outdir: Path, codec: str, image: str, target: float) -> Path:
    return outdir / "cache" / codec / image / f"{rate_code(target)}.json"


def _read_cache(path: Path, expect: dict[str, Any]) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if any(doc.get("meta", {}).get(k) != v for k, v in expect.items()):
        return None
    return doc.get("row")


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    return x


def _from_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (math.nan if v is None and k in CSV_FIELDS else v) for k, v in row.items()}


def score(ref: np.ndarray, dec: np.ndarray, with_vmaf: bool) -> dict[str, float]:
    """All per-point quality metrics of `dec` against `ref`: the earlier columns and jai_<name> for the JPEG AI
    set (both VMAFs NaN without with_vmaf)."""
    if dec.shape != ref.shape:
        raise ValueError(f"decoded shape {dec.shape} != original {ref.shape}")
    msy = metrics.ms_ssim_y(ref, dec)
    jai = metrics.jpeg_ai(ref, dec, tuple(n for n in metrics.JPEG_AI_NAMES if with_vmaf or n != "vmaf"))
    return {"psnr_rgb": metrics.psnr_rgb(ref, dec), "psnr_y": metrics.psnr_y_bt601(ref, dec), "msssim_y": msy,
            "msssim_rgb": metrics.ms_ssim_rgb(ref, dec),
            "vmaf": ffmpeg.vmaf(ref, dec) if with_vmaf else math.nan,
            **{f"jai_{n}": jai.get(n, math.nan) for n in metrics.JPEG_AI_NAMES}}


def _warm_up(codec: Codec, rgb: np.ndarray, log: RunLog, image: str) -> None:
    """One untimed encode+decode of a small crop, so model loading is not billed to the first image."""
    try:
        small = np.ascontiguousarray(rgb[:256, :256])
        data, _ = codec.encode_target(small, 0.5)  # type: ignore[attr-defined]
        codec.decode(data, *small.shape[:2])
    except Exception as exc:  # noqa: BLE001
        log.point(image, codec.name, -1.0, f"{codec.name}: warm-up encode failed ({type(exc).__name__}: {exc}); "
                  "first timing may include model loading")


def evaluate(codecs: list[Codec], images: list[Path], targets: Iterable[float], outdir: Path, *,
             crop: int | None, force: bool, with_vmaf: bool, log: RunLog,
             progress: Callable[[int], Any] | None = None, save_bitstreams: bool = False) -> list[dict[str, Any]]:
    """Evaluate every codec on every image at every target; return one row per point (CSV_FIELDS + extras)."""
    targets = list(targets)
    rows: list[dict[str, Any]] = []
    keys = {c.name: codec_key(c) for c in codecs}
    warmed: set[str] = set()
    for path in images:
        name = path.stem
        rgb: np.ndarray | None = None
        for codec in codecs:
            expect = {"cache_version": CACHE_VERSION, "crop": crop, "codec_key": keys[codec.name],
                      "vmaf": with_vmaf, "source_mtime": path.stat().st_mtime}
            trials: TrialCache | None = None
            for target in targets:
                cpath = cache_path(outdir, codec.name, name, target)
                row = None if force else _read_cache(cpath, expect)
                if row is not None:
                    rows.append(_from_json(row))
                    log.cache_hits += 1
                    if progress:
                        progress(1)
                    continue
                if rgb is None:
                    rgb = load_image(path, crop)
                h, w = rgb.shape[:2]
                try:
                    extra: dict[str, Any] = {}
                    if codec.rate_controlled:
                        if codec.name not in warmed:
                            _warm_up(codec, rgb, log, name)
                            warmed.add(codec.name)
                        t0 = time.perf_counter()
                        data, extra = codec.encode_target(rgb, target)  # type: ignore[attr-defined]
                        enc_s = time.perf_counter() - t0
                        knob: Any = f"{extra.get('model', '')}@{extra.get('delta', math.nan):.4g}"
                        calls = int(extra.get("probes", 1))  # encoder's own search effort if reported
                        bpp = metrics.bpp(len(data), w, h)
                        inside = within_band(bpp, target)
                        if abs(extra.get("reported_bpp", bpp) - bpp) > 1e-6:
                            log.point(name, codec.name, target, f"{codec.name} / {name} / {target:.2f}: encoder "
                                      f"reported {extra['reported_bpp']:.5f} bpp, file size gives {bpp:.5f}")
                    else:
                        if trials is None:
                            trials = TrialCache(lambda k, im=rgb, c=codec: c.encode(im, k), w, h)
                        m = match_rate(trials, codec.knob, target)
                        data, enc_s, knob, calls, bpp, inside = m.data, m.enc_s, m.knob, m.calls, m.bpp, m.within_band
                    t0 = time.perf_counter()
                    dec = codec.decode(data, h, w)
                    dec_s = time.perf_counter() - t0
                    row = {"codec": codec.name, "image": name, "target": target, "bpp": bpp,
                           "within_band": bool(inside), "knob": knob, **score(rgb, dec, with_vmaf),
                           "enc_s": enc_s, "dec_s": dec_s, "calls": calls, "bytes": len(data),
                           "width": w, "height": h, **{f"ours_{k}": v for k, v in extra.items()}}
                except Exception as exc:  # noqa: BLE001 - one bad point must not kill a long run
                    log.point(name, codec.name, target, f"{codec.name} / {name} / {target:.2f} bpp: "
                              f"{type(exc).__name__}: {exc}", failure=True)
                    if progress:
                        progress(1)
                    continue
                if save_bitstreams:
                    bdir = outdir / "bitstreams" / codec.name
                    bdir.mkdir(parents=True, exist_ok=True)
                    (bdir / f"{name}_{rate_code(target)}.{codec.ext}").write_bytes(data)
                cpath.parent.mkdir(parents=True, exist_ok=True)
                cpath.write_text(json.dumps({"meta": expect, "row": _json_safe(row)}, indent=1))
                rows.append(row)
                log.computed += 1
                if progress:
                    progress(1)
    return rows
