"""Runs the checks in order over one shared context (images, encoded streams, decode runs).

Streams are encoded once, in this process, by the real encoder API and written
to REPORT/streams/<image>_<rate code>.bit (the CLI's naming); every later check
works from those files, so what is measured is what would be submitted.

The determinism and parity checks also always take the committed bitstream v3
goldens (Options.v3_dir, default tests/expected/charm: a tiny v3 model, its
registry and three streams with their pinned symbol and y_hat_q hashes), decoded
with that folder's registry, so v3 (the slice loop) is covered whatever models
the suite's registry holds. They are not rate-checked (they are fixed streams of
an untrained model) and are listed separately, with their bitstream version.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conformance.common import GOLDEN_DIR, KODAK, V3_GOLDEN_DIR
from conformance.report import CheckResult

CHECKS = ("rate", "determinism", "parity", "golden", "robustness")


@dataclass
class Options:
    """Everything the CLI can set; the defaults are the full (non-quick) run."""

    images_dir: Path
    targets: list[float]
    report_dir: Path
    registry: str | None = None
    exclusions: Path | None = None
    quick: bool = False
    checks: tuple[str, ...] = CHECKS
    seed: int = 0
    cases: int | None = None            # robustness cases (None: 300, or 80 with --quick)
    case_timeout: float = 30.0          # seconds per robustness case
    mem_limit_gb: float = 4.0           # RLIMIT_AS for every decoder child
    golden_dir: Path = GOLDEN_DIR
    kodak_dir: Path = KODAK
    keep_work: bool = False
    progress: bool = True
    configs: tuple[str, ...] | None = None   # decode runtime configurations by name (None: all, or 3 with quick)
    command: str = ""                        # as typed, for the report
    gpu_backend: str = "tf"                  # parity: decode on a GPU with TF, or with the JAX synthesis backend
    v3_dir: Path | None = V3_GOLDEN_DIR      # bitstream v3 goldens for determinism/parity (None: none; tests only)
    refine: int = 0                          # latent-refinement steps the streams are encoded with (encoder/refine.py)
    shard: tuple[int, int] = (0, 1)          # (K, N): images i % N == K by name, robustness cases likewise;
                                             # the golden check and the real-CLI cases run in share 0 only


@dataclass
class SourceImage:
    name: str           # file name, as reported
    stem: str
    path: Path
    rgb: np.ndarray | None
    error: str = ""


@dataclass
class StreamRec:
    """One (image, target) pair after encoding."""

    image: str
    stem: str
    target: float
    path: Path | None
    width: int
    height: int
    status: str                     # ok | unreachable | error
    encoder_bpp: float = float("nan")
    model: str = ""
    delta_code: int = -1
    lo: float | None = None         # achievable range, when unreachable
    hi: float | None = None
    error: str = ""
    version: int | None = None      # bitstream version, from the header (None: not read yet)
    registry: str | None = None     # registry that decodes it (None: the suite's, Options.registry)
    source: str = "encoded"         # encoded | v3 golden
    expected: dict | None = None    # pinned parse hashes (v3 goldens: symbols, y_hat_q)

    @property
    def name(self) -> str:
        return self.path.name if self.path else f"{self.stem}@{self.target:.2f}"


@dataclass
class Context:
    opts: Options
    registry: object                       # models.weights.Registry
    images: list[SourceImage]
    work: Path
    streams: list[StreamRec] = field(default_factory=list)
    cache: dict = field(default_factory=dict)   # shared between checks (e.g. decode runs)
    _encoder: object = None

    @property
    def encoder(self):
        if self._encoder is None:
            from encoder.api import Encoder
            self._encoder = Encoder(self.opts.registry, refine=self.opts.refine)
        return self._encoder

    @property
    def streams_dir(self) -> Path:
        return self.opts.report_dir / "streams"

    def bar(self, total: int, desc: str):
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, disable=not self.opts.progress,
                    leave=True, dynamic_ncols=True, mininterval=0.5)

    def decodable(self) -> list[StreamRec]:
        """Streams that exist on disk (in-band or best-effort), in a stable order."""
        return [s for s in self.streams if s.path is not None and s.path.is_file()]

    def v3_goldens(self) -> list[StreamRec]:
        """The bitstream v3 golden streams (module docstring), loaded once; [] if Options.v3_dir is None.

        Raises ValueError if the folder or a stream is missing: the checks then fail, never skip v3."""
        if "v3_goldens" not in self.cache:
            try:
                self.cache["v3_goldens"] = load_v3_goldens(self.opts.v3_dir) if self.opts.v3_dir else []
            except (OSError, ValueError, KeyError) as e:
                self.cache["v3_goldens"] = ValueError(f"bitstream v3 goldens in {self.opts.v3_dir}: {e}")
        got = self.cache["v3_goldens"]
        if isinstance(got, Exception):
            raise got
        return got


def load_v3_goldens(folder: Path) -> list[StreamRec]:
    """StreamRecs for the streams of a v3 golden folder (expected.json + registry.yaml, tests/test_charm_codec.py)."""
    import json

    from decoder.bitstream import parse_header
    from models.targets import TARGETS
    from models.weights import load_registry
    folder = Path(folder)
    registry = folder / "registry.yaml"
    reg = load_registry(str(registry))
    doc = json.loads((folder / "expected.json").read_text())
    out = []
    for s in doc:
        path = folder / s["file"]
        h = parse_header(path.read_bytes())
        if h.version != 3:
            raise ValueError(f"{s['file']} is bitstream version {h.version}, not 3")
        out.append(StreamRec(path.name, path.stem, TARGETS[h.target_index], path, h.width, h.height, "ok",
                             model=reg.by_target(h.target_index).name, delta_code=h.delta_code, version=h.version,
                             registry=str(registry), source="v3 golden",
                             expected={"symbols": s["symbols"], "y_hat_q": s["y_hat_q"]}))
    if not out:
        raise ValueError("expected.json lists no streams")
    return out


def load_images(images_dir: Path, shard: tuple[int, int] = (0, 1)) -> list[SourceImage]:
    from encoder.imageio import InputError, image_paths, load_rgb8
    from models.batch import Shard
    out = []
    for p in Shard(*shard).take(image_paths(images_dir), key=lambda p: p.name):
        try:
            out.append(SourceImage(p.name, p.stem, p, load_rgb8(p)))
        except InputError as e:
            out.append(SourceImage(p.name, p.stem, p, None, str(e)))
    return out


def encode_all(ctx: Context) -> None:
    """Every image at every target through Encoder.encode; unreachable pairs keep the closest stream."""
    from decoder import bitstream as B
    from models.pngio import write_bytes_atomic
    from models.targets import rate_code
    from rate_control.search import Unreachable
    ctx.streams_dir.mkdir(parents=True, exist_ok=True)
    for old in ctx.streams_dir.glob("*.bit"):
        old.unlink()
    bar = ctx.bar(len(ctx.images) * len(ctx.opts.targets), "encode")
    for img in ctx.images:
        for t in ctx.opts.targets:
            if img.rgb is None:
                ctx.streams.append(StreamRec(img.name, img.stem, t, None, 0, 0, "error", error=img.error))
                bar.update(1)
                continue
            h, w = img.rgb.shape[:2]
            rec = StreamRec(img.name, img.stem, t, ctx.streams_dir / f"{img.stem}_{rate_code(t)}.bit", w, h, "ok")
            try:
                c = ctx.encoder.encode(img.rgb, t, best_effort=False)
            except Unreachable as e:
                c, rec.status, rec.lo, rec.hi = e.best, "unreachable", e.lo, e.hi
            except Exception as e:  # noqa: BLE001 - reported per pair, the run goes on
                rec.status, rec.error, rec.path = "error", f"{type(e).__name__}: {e}".splitlines()[0], None
                ctx.streams.append(rec)
                bar.update(1)
                continue
            write_bytes_atomic(rec.path, c.data)
            rec.encoder_bpp, rec.model, rec.delta_code = c.bpp, c.model, c.delta_code
            rec.version = B.stream_version(c.data)
            ctx.streams.append(rec)
            bar.set_postfix_str(f"{img.stem} {c.bpp:.3f}/{t:.2f}")
            bar.update(1)
    bar.close()


def _check_fn(name: str) -> Callable[[Context], CheckResult]:
    from conformance import golden
    from conformance.checks import determinism, parity, rate, robustness
    return {"rate": rate.check, "determinism": determinism.check, "parity": parity.check,
            "golden": golden.check, "robustness": robustness.check}[name]


def run(opts: Options, streams: list[StreamRec] | None = None) -> tuple[list[CheckResult], dict]:
    """All requested checks; returns the results and the report's metadata.

    `streams` are already-written streams (a submission package's): they are
    checked as they are instead of being encoded again.
    """
    from models.runtime import configure
    from models.targets import TARGETS
    from models.weights import load_registry, registry_path
    t0 = time.perf_counter()
    configure()
    registry = load_registry(opts.registry)
    opts.report_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work.", dir=opts.report_dir))
    ctx = Context(opts, registry, load_images(opts.images_dir, opts.shard), work)
    meta = {"command": opts.command, "images_dir": str(opts.images_dir),
            "images": len(ctx.images), "targets": ", ".join(f"{t:.2f}" for t in opts.targets),
            "registry": str(registry_path(opts.registry)),
            "models": "; ".join(f"{TARGETS[e.target_index]:.2f}: {e.name} {e.hash}" for e in registry.entries),
            "mode": "quick" if opts.quick else "full", "seed": opts.seed, "refine": opts.refine}
    k, n = opts.shard
    if n > 1:
        meta["shard"] = (f"{k}/{n}: images {k}, {k} + {n}, ... by name and the same share of robustness cases"
                         + ("; the golden check and the real-CLI robustness runs" if k == 0 else
                            "; golden and real-CLI robustness runs are share 0's"))
    results: list[CheckResult] = []
    try:
        if streams is not None:
            ctx.streams = list(streams)
        elif any(c in opts.checks for c in ("rate", "determinism", "parity")):
            encode_all(ctx)
        for name in CHECKS:
            if name not in opts.checks or (name == "golden" and opts.shard[0] != 0):
                continue
            t1 = time.perf_counter()
            try:
                r = _check_fn(name)(ctx)
            except Exception as e:  # noqa: BLE001 - a broken check is a failed check, never a pass
                first = str(e).splitlines()[0] if str(e) else ""
                r = CheckResult(name, False, f"check raised {type(e).__name__}: {first}")
                r.fail(r.summary)
            r.seconds = time.perf_counter() - t1
            results.append(r)
    finally:
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    return results, meta
