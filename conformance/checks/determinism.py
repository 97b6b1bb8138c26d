"""Check 2, determinism: same input, same output, whatever the runtime.

- Encoding the same image twice gives identical bytes: once more in this
  process (warm caches) and once in a separate `python -m encoder` batch process.
- Decoding the same stream twice in one process gives identical pixels.
- Decoding in separate processes under different runtime configurations
  (TF intra/inter-op threads, oneDNN on/off and its ISA, OpenMP/MKL/OpenBLAS
  threads and BLAS kernel) gives identical parsed symbols (`symbols_sha256_16`
  from `python -m decoder --info`) and reconstructions within max |diff| <= 1.
  Each configuration is one `python -m decoder --dir ... --info` process, so TF
  start-up is paid once per configuration, not per stream.

The parse must be bit-exact (a flipped scale index desynchronises the range
decoder); only the float synthesis may wobble, by at most one level.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conformance.common import child_env, fmt_db, load_png, max_abs_diff, psnr, python
from conformance.report import CheckResult, Table

RECON_TOL = 1          # max |diff| allowed between reconstructions of one stream (levels of 255)

# Environment variables that change CPU float results (or the BLAS used by the integer hyper path).
RUNTIME_VARS = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS")


@dataclass(frozen=True)
class RuntimeConfig:
    name: str
    threads: int                      # decoder --threads (TF intra/inter-op); 0 = library default
    env: dict[str, str]

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.env.items()) or "(inherited environment)"


# The first is the reference. All are CPU-only (CUDA_VISIBLE_DEVICES=''); GPU is the parity check's job.
CONFIGS: tuple[RuntimeConfig, ...] = (
    RuntimeConfig("t1-onednn0", 1, {"TF_ENABLE_ONEDNN_OPTS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                    "OPENBLAS_NUM_THREADS": "1"}),
    RuntimeConfig("t2-onednn1", 2, {"TF_ENABLE_ONEDNN_OPTS": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                                    "OPENBLAS_NUM_THREADS": "2"}),
    RuntimeConfig("t1-onednn1-sse41-blas-prescott", 1, {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "SSE41",
                                                        "DNNL_MAX_CPU_ISA": "SSE41", "OPENBLAS_CORETYPE": "Prescott",
                                                        "OPENBLAS_NUM_THREADS": "1"}),
    RuntimeConfig("t2-onednn0-blas-sandybridge", 2, {"TF_ENABLE_ONEDNN_OPTS": "0", "OPENBLAS_CORETYPE": "Sandybridge",
                                                     "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}),
    RuntimeConfig("library-defaults", 0, {}),
)
QUICK_CONFIGS = CONFIGS[:3]
QUICK_IMAGES = 2


@dataclass
class DecodeRun:
    """One decoder process over a folder of streams."""

    name: str
    rc: int | None
    seconds: float
    results: dict[str, dict] = field(default_factory=dict)   # stream file name -> {symbols, png, error}
    stderr: str = ""
    device: str = "CPU"
    meta: dict = field(default_factory=dict)                 # other JSON lines (e.g. the GPU report)

    def error_for(self, stream: str) -> str:
        r = self.results.get(stream)
        if r is None:
            lines = [l for l in self.stderr.splitlines() if stream in l]
            return lines[-1] if lines else (self.stderr.strip().splitlines() or [f"rc={self.rc}, no output"])[-1]
        return r.get("error", "")


def parse_info(stdout: str, stderr: str, out_dir: Path) -> dict[str, dict]:
    """`--info` JSON lines -> per-stream symbols hash and PNG path; errors from stderr lines."""
    res: dict[str, dict] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "stream" in d:
            name = Path(d["stream"]).name
            res[name] = {"symbols": d.get("symbols_sha256_16"), "png": Path(d["output"]), "error": "",
                         "seconds": d.get("seconds")}
    for line in stderr.splitlines():   # "ratelock-decode: NAME: message"
        parts = line.split(": ", 2)
        if len(parts) == 3 and parts[1].endswith((".bit", ".bits")) and parts[1] not in res:
            res[parts[1]] = {"symbols": None, "png": None, "error": parts[2]}
    return res


def run_decoder_batch(streams_dir: Path, out_dir: Path, registry: str | None, cfg: RuntimeConfig,
                      timeout: float, module: tuple[str, ...] = ("-m", "decoder"), cpu_only: bool = True) -> DecodeRun:
    """`python -m decoder --dir streams_dir out_dir --info` in a fresh process under one configuration."""
    env = child_env(drop=RUNTIME_VARS)
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(cfg.env)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [python(), *module, "--dir", str(streams_dir), str(out_dir), "--info"]
    if cfg.threads:
        cmd += ["--threads", str(cfg.threads)]
    if registry:
        cmd += ["--registry", str(registry)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        so = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, se = None, f"timed out after {timeout:.0f} s"
    meta = {}
    for line in so.splitlines():
        if line.startswith("{") and '"stream"' not in line:
            try:
                meta.update(json.loads(line))
            except json.JSONDecodeError:
                pass
    return DecodeRun(cfg.name, rc, time.perf_counter() - t0, parse_info(so, se, out_dir), se, meta=meta)


@dataclass
class Comparison:
    stream: str
    symbols_equal: bool
    max_diff: int | None
    psnr: float | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.symbols_equal and self.max_diff is not None and self.max_diff <= RECON_TOL


def compare_runs(ref: DecodeRun, other: DecodeRun, streams: list[str]) -> list[Comparison]:
    """Per stream: symbols identical and reconstruction within RECON_TOL of the reference run."""
    out = []
    for s in streams:
        a, b = ref.results.get(s), other.results.get(s)
        if not a or not a.get("symbols"):
            out.append(Comparison(s, False, None, None, f"{ref.name} did not decode it: {ref.error_for(s)}"))
            continue
        if not b or not b.get("symbols"):
            out.append(Comparison(s, False, None, None, f"{other.name} did not decode it: {other.error_for(s)}"))
            continue
        ia, ib = _pixels(a), _pixels(b)
        out.append(Comparison(s, a["symbols"] == b["symbols"], max_abs_diff(ia, ib), psnr(ia, ib)))
    return out


def _pixels(r: dict) -> np.ndarray:
    if "rgb" in r:
        return r["rgb"]
    return load_png(r["png"])


def decode_in_process(data: bytes, models) -> tuple[str, np.ndarray]:
    """What decoder.decode.decode_bytes does, keeping the parsed-symbol hash."""
    from decoder import decode as D
    parsed = D.parse(data, models, D.Limits())
    model = models.get(parsed.header)
    rgb = D.to_uint8(D.synthesize(model.synthesis, D.dequantize(parsed)), parsed.header.width, parsed.header.height)
    return parsed.symbol_hash(), rgb


def subset(ctx) -> list:
    """Streams checked here: all of them, or with --quick those of the first QUICK_IMAGES readable images."""
    streams = ctx.decodable()
    if not ctx.opts.quick:
        return streams
    keep = []
    for s in streams:
        if s.image not in keep:
            keep.append(s.image)
    keep = keep[:QUICK_IMAGES]
    return [s for s in streams if s.image in keep]


def configs_for(ctx) -> tuple[RuntimeConfig, ...]:
    """--configs if given (in that order; the first is the reference), else all, or QUICK_CONFIGS with --quick."""
    names = getattr(ctx.opts, "configs", None)
    if names:
        by = {c.name: c for c in CONFIGS}
        return tuple(by[n] for n in names)
    return QUICK_CONFIGS if ctx.opts.quick else CONFIGS


def decode_runs(ctx, streams: list) -> dict[str, DecodeRun]:
    """Run (once per suite) every CPU configuration over `streams`; shared with the parity check."""
    runs = ctx.cache.setdefault("decode_runs", {})
    src = ctx.work / "decode_in"
    if not src.is_dir():
        src.mkdir(parents=True)
        for s in streams:
            shutil.copyfile(s.path, src / s.path.name)
    todo = [c for c in configs_for(ctx) if c.name not in runs]
    bar = ctx.bar(len(todo), "decode configs")
    for cfg in todo:
        bar.set_postfix_str(cfg.name)
        runs[cfg.name] = run_decoder_batch(src, ctx.work / "decoded" / cfg.name, ctx.opts.registry, cfg,
                                           timeout=120 + 30 * len(streams))
        bar.update(1)
    bar.close()
    return runs


def _encode_checks(ctx, r: CheckResult, streams: list) -> list[list]:
    """In-process repeat and separate CLI process; both must give the bytes on disk."""
    rows = []
    same = 0
    bar = ctx.bar(len(streams), "re-encode")
    images = {i.name: i for i in ctx.images}
    for s in streams:
        c = ctx.encoder.encode(images[s.image].rgb, s.target, best_effort=True)
        if c.data == s.path.read_bytes():
            same += 1
        else:
            r.fail(f"second encode in the same process differs ({len(c.data)} vs {s.path.stat().st_size} bytes)",
                   image=s.image, target=s.target)
        bar.update(1)
    bar.close()
    rows.append(["same process, second call", len(streams), same])

    # One batch CLI process over the same images and targets.
    img_dir = ctx.work / "cli_images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted({s.image for s in streams}):
        dst = img_dir / name
        if not dst.exists():
            os.symlink(images[name].path.resolve(), dst)
    out = ctx.work / "cli_encode"
    targets = sorted({s.target for s in streams})
    cmd = [python(), "-m", "encoder", str(img_dir), "--targets", ",".join(repr(t) for t in targets),
           "--out", str(out), "--best-effort"]
    if ctx.opts.registry:
        cmd += ["--registry", str(ctx.opts.registry)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300 + 60 * len(streams))
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, "timed out"
    r.figures["cli_encode_seconds"] = round(time.perf_counter() - t0, 1)
    same = 0
    if rc not in (0, 2):
        last = [l for l in (err or "").splitlines() if l.strip()]
        r.fail(f"`python -m encoder` batch run failed (rc={rc}): {last[-1] if last else ''}")
    else:
        for s in streams:
            f = out / s.path.name
            if not f.is_file():
                r.fail("separate `python -m encoder` process wrote no stream for this pair", image=s.image,
                       target=s.target)
            elif f.read_bytes() != s.path.read_bytes():
                r.fail(f"separate `python -m encoder` process wrote different bytes ({f.stat().st_size} vs "
                       f"{s.path.stat().st_size})", image=s.image, target=s.target)
            else:
                same += 1
    rows.append(["separate process (python -m encoder batch)", len(streams), same])
    return rows


def check(ctx) -> CheckResult:
    from decoder import decode as D
    r = CheckResult("determinism", True, "")
    streams = subset(ctx)
    if not streams:
        r.fail("no streams to test (nothing was encoded)")
        r.summary = "no streams"
        return r
    by_name = {s.path.name: s for s in streams}
    if ctx.opts.quick:
        r.notes.append(f"--quick: streams of the first {QUICK_IMAGES} images only")

    enc_rows = _encode_checks(ctx, r, streams)
    r.tables.append(Table("Encoding the same image twice (bytes compared with the stream on disk)",
                          ["how", "streams", "identical"], enc_rows))

    # Decode twice in this process.
    models = D.ModelCache(ctx.opts.registry)
    inproc = DecodeRun("in-process", 0, 0.0, device="CPU (this process)")
    t0 = time.perf_counter()
    same = 0
    bar = ctx.bar(len(streams), "decode twice")
    images = {i.name: i for i in ctx.images}
    psnrs = []
    for s in streams:
        data = s.path.read_bytes()
        try:
            h1, a = decode_in_process(data, models)
            h2, b = decode_in_process(data, models)
        except D.DecodeError as e:
            r.fail(f"decoder rejected the encoder's stream: {e}", image=s.image, target=s.target)
            bar.update(1)
            continue
        inproc.results[s.path.name] = {"symbols": h1, "rgb": a, "error": ""}
        if h1 == h2 and np.array_equal(a, b):
            same += 1
        else:
            r.fail(f"two decodes in one process differ (symbols {'same' if h1 == h2 else 'differ'}, "
                   f"max |diff| {max_abs_diff(a, b)})", image=s.image, target=s.target)
        psnrs.append(psnr(a, images[s.image].rgb))
        bar.update(1)
    bar.close()
    inproc.seconds = time.perf_counter() - t0
    r.figures["decode_twice_identical"] = f"{same}/{len(streams)}"
    if psnrs:
        r.figures["psnr_vs_source_db_mean"] = round(float(np.mean(psnrs)), 3)

    # Separate processes, one per configuration.
    runs = decode_runs(ctx, streams)
    cfgs = configs_for(ctx)
    ref = runs[cfgs[0].name]
    names = list(by_name)
    rows = []
    for run, cfg in [(runs[c.name], c) for c in cfgs] + [(inproc, None)]:
        cmp = compare_runs(ref, run, names)
        for c in cmp:
            if not c.ok:
                s = by_name[c.stream]
                what = c.error or (f"symbols differ from {ref.name}" if not c.symbols_equal else
                                   f"reconstruction max |diff| {c.max_diff} > {RECON_TOL} vs {ref.name}")
                r.fail(f"{run.name}: {what}", image=s.image, target=s.target)
        diffs = [c.max_diff for c in cmp if c.max_diff is not None]
        ps = [c.psnr for c in cmp if c.psnr is not None]
        rows.append([run.name, cfg.threads if cfg else "-", cfg.describe() if cfg else "this process, as configured",
                     f"{sum(1 for c in cmp if c.max_diff is not None)}/{len(names)}",
                     f"{sum(c.symbols_equal for c in cmp)}/{len(names)}", max(diffs) if diffs else "-",
                     fmt_db(min(ps)) if ps else "-", f"{run.seconds:.1f}"])
    r.tables.append(Table(f"Decoding in separate processes (reference: {ref.name}; all with CUDA_VISIBLE_DEVICES='')",
                          ["configuration", "threads", "environment", "decoded", "symbols = ref", "max |diff|",
                           "min PSNR vs ref (dB)", "seconds"], rows))
    all_diffs = [row[5] for row in rows if row[5] != "-"]
    r.figures.update(streams=len(streams), configurations=len(cfgs),
                     max_recon_diff=max(all_diffs) if all_diffs else None)
    r.summary = (f"{len(streams)} streams: encode repeat + separate CLI process, decode twice, "
                 f"{len(cfgs)} process configurations; max recon |diff| {r.figures['max_recon_diff']}; "
                 f"{len(r.failures)} failure(s)")
    return r
