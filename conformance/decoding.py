"""Decoding streams for the checks: separate decoder processes under runtime configurations, and in process.

Shared by the determinism, parity and golden checks (conformance/checks/): each CPU configuration
(TF intra/inter-op threads, oneDNN on/off and its ISA, OpenMP/MKL/OpenBLAS threads and BLAS kernel)
is one `python -m decoder --dir ... --info` process per registry (conformance/children/worker.py's
`decode` mode), run once per suite and cached in the context; the in-process decode keeps the parse
so its integers can be compared with the processes' (conformance.common.parse_ints).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conformance.common import PARSE_INTS, child_env, load_png, max_abs_diff, psnr, python
from conformance.report import CheckResult

RECON_TOL = 1          # max |diff| allowed between reconstructions of one stream (levels of 255)

# Environment variables that change CPU float results (or the BLAS used by the integer hyper path).
RUNTIME_VARS = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS")


DECODER_MAIN = "decoder.__main__:main"


@dataclass(frozen=True)
class RuntimeConfig:
    name: str
    threads: int                      # decoder --threads (TF intra/inter-op); 0 = library default
    env: dict[str, str]
    entry: str = DECODER_MAIN         # module:function the decode process calls with the decoder's argv

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
    results: dict[str, dict] = field(default_factory=dict)   # stream file name -> {symbols, png, error, ints}
    stderr: str = ""
    device: str = "CPU"
    meta: dict = field(default_factory=dict)                 # other JSON lines (e.g. the GPU report)

    def error_for(self, stream: str) -> str:
        r = self.results.get(stream)
        if r is None:
            lines = [l for l in self.stderr.splitlines() if stream in l]
            return lines[-1] if lines else (self.stderr.strip().splitlines() or [f"rc={self.rc}, no output"])[-1]
        return r.get("error", "")


def _json_lines(stdout: str):
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict):
            yield d


def parse_info(stdout: str, stderr: str, out_dir: Path) -> dict[str, dict]:
    """The decoder's `--info` JSON lines -> per-stream symbols hash, PNG path and parse integers
    (`ints`, `version`: the line's "integers"); errors from stderr lines."""
    res: dict[str, dict] = {}
    for d in _json_lines(stdout):
        if "stream" in d:
            ints = d.get("integers") if isinstance(d.get("integers"), dict) else None
            res[Path(d["stream"]).name] = {
                "symbols": d.get("symbols_sha256_16"), "png": Path(d["output"]), "error": "",
                "seconds": d.get("seconds"), "ints": {k: ints.get(k) for k in PARSE_INTS} if ints else None,
                "version": ints.get("version") if ints else None}
    for line in stderr.splitlines():   # "ratelock-decode: NAME: message"
        parts = line.split(": ", 2)
        if len(parts) == 3 and parts[1].endswith((".bit", ".bits")) and parts[1] not in res:
            res[parts[1]] = {"symbols": None, "png": None, "error": parts[2]}
    return res


def run_decoder_batch(groups: list[tuple[Path, str | None]], out_dir: Path, cfg: RuntimeConfig, timeout: float,
                      cpu_only: bool = True) -> DecodeRun:
    """One fresh process under one configuration decoding every group (streams folder, registry):
    `python -m conformance.children.worker decode` runs cfg.entry (the decoder's main()) with
    `--dir FOLDER OUT --info [--registry R]` once per group and adds each stream's parse integers."""
    env = child_env(drop=RUNTIME_VARS)
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(cfg.env)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [python(), "-m", "conformance.children.worker", "decode", "--entry", cfg.entry]
    if cfg.threads:
        cmd += ["--threads", str(cfg.threads)]
    for i, (src, registry) in enumerate(groups):
        cmd += ["--group", str(src), str(out_dir / f"g{i}"), str(registry) if registry else "-"]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        so = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, se = None, f"timed out after {timeout:.0f} s"
    meta = {}
    for d in _json_lines(so):
        if "stream" not in d:
            meta.update(d)
    return DecodeRun(cfg.name, rc, time.perf_counter() - t0, parse_info(so, se, out_dir), se, meta=meta)


@dataclass
class Comparison:
    stream: str
    symbols_equal: bool
    max_diff: int | None
    psnr: float | None
    error: str = ""
    ints_differ: tuple[str, ...] = ()     # parse-integer hashes (common.PARSE_INTS) that differ from the reference
    version: int | None = None            # bitstream version, as the decodes reported it

    @property
    def ints_equal(self) -> bool:
        return self.symbols_equal and not self.ints_differ and not self.error

    @property
    def ok(self) -> bool:
        return not self.error and self.ints_equal and self.max_diff is not None and self.max_diff <= RECON_TOL

    def what(self, ref: str) -> str:
        """One line: why this comparison failed (empty if it did not)."""
        if self.error:
            return self.error
        if not self.symbols_equal:
            return f"symbols differ from {ref} (symbols_sha256_16: z_hat, scale indexes, symbols)"
        if self.ints_differ:
            return f"parse integers differ from {ref}: {', '.join(self.ints_differ)}"
        if self.max_diff is not None and self.max_diff > RECON_TOL:
            return f"reconstruction max |diff| {self.max_diff} > {RECON_TOL} vs {ref}"
        return ""


def compare_runs(ref: DecodeRun, other: DecodeRun, streams: list[str]) -> list[Comparison]:
    """Per stream: symbols and every parse-integer hash identical, reconstruction within RECON_TOL of the reference.

    A run that reports parse integers for a stream the other reports none for is an error (the hook that
    reports them broke), never a pass; runs reporting none at all compare symbols and pixels only."""
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
        c = Comparison(s, a["symbols"] == b["symbols"], max_abs_diff(ia, ib), psnr(ia, ib),
                       version=a.get("version") or b.get("version"))
        ka, kb = a.get("ints"), b.get("ints")
        if ka is not None and kb is not None:
            c.ints_differ = tuple(k for k in PARSE_INTS if ka.get(k) != kb.get(k))
        elif ka is not None or kb is not None:
            c.error = f"{(other if kb is None else ref).name} reported no parse integers (y_hat_q, mu_q, scale indexes)"
        out.append(c)
    return out


def _pixels(r: dict) -> np.ndarray:
    if "rgb" in r:
        return r["rgb"]
    return load_png(r["png"])


def decode_parsed(data: bytes, models):
    """What decoder.decode.decode_bytes does, keeping the parse: (Parsed, rgb)."""
    from decoder import decode as D
    parsed = D.parse(data, models, D.Limits())
    model = D.model_for(parsed.header, models)       # any store: the decoder's cache or the encoder's models
    rgb = D.to_uint8(D.synthesize(model.synthesis, D.dequantize(parsed)), parsed.header.width, parsed.header.height)
    return parsed, rgb


def decode_in_process(data: bytes, models) -> tuple[str, np.ndarray]:
    """What decoder.decode.decode_bytes does, keeping the parsed-symbol hash."""
    parsed, rgb = decode_parsed(data, models)
    return parsed.symbol_hash(), rgb


def registry_of(ctx, s) -> str | None:
    """The registry that decodes stream s: its own (the v3 goldens'), else the suite's."""
    return getattr(s, "registry", None) or ctx.opts.registry


def version_of(s) -> int | None:
    """A stream's bitstream version (read from its header once)."""
    v = getattr(s, "version", None)
    if v is None:
        from decoder.bitstream import stream_version
        try:
            v = stream_version(s.path.read_bytes())
        except OSError:
            return None
        try:
            s.version = v
        except AttributeError:
            pass
    return v


def where(s) -> dict:
    """Failure location of a stream: image, target, bitstream version."""
    return {"image": s.image, "target": s.target, "version": version_of(s)}


class Stores(dict):
    """One decoder ModelCache per registry (the suite's, the v3 goldens')."""

    def __init__(self, ctx):
        super().__init__()
        self.ctx = ctx

    def of(self, s):
        from decoder import decode as D
        reg = registry_of(self.ctx, s)
        if reg not in self:
            self[reg] = D.ModelCache(reg)
        return self[reg]


def subset(ctx) -> list:
    """Encoded streams checked here: all of them, or with --quick those of the first QUICK_IMAGES readable images.
    (streams_for adds the v3 goldens.)"""
    streams = ctx.decodable()
    if not ctx.opts.quick:
        return streams
    keep = []
    for s in streams:
        if s.image not in keep:
            keep.append(s.image)
    keep = keep[:QUICK_IMAGES]
    return [s for s in streams if s.image in keep]


def streams_for(ctx, r: CheckResult) -> list:
    """subset(ctx) plus the bitstream v3 goldens, which are always checked (a missing one fails r)."""
    streams = subset(ctx)
    try:
        v3 = ctx.v3_goldens()
    except ValueError as e:
        r.fail(f"{e}: bitstream v3 NOT checked")
        v3 = []
    names = {s.path.name for s in streams}
    for s in v3:
        if s.path.name in names:
            r.fail(f"a v3 golden has the name of an encoded stream ({s.path.name}): rename the image")
        else:
            streams.append(s)
    return streams


def version_counts(streams: list) -> dict[int, int]:
    out: dict[int, int] = {}
    for s in streams:
        v = version_of(s)
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def describe_versions(streams: list) -> str:
    """'4 v2 + 3 v3'."""
    return " + ".join(f"{n} v{v}" for v, n in version_counts(streams).items())


def configs_for(ctx) -> tuple[RuntimeConfig, ...]:
    """--configs if given (in that order; the first is the reference), else all, or QUICK_CONFIGS with --quick."""
    names = getattr(ctx.opts, "configs", None)
    if names:
        by = {c.name: c for c in CONFIGS}
        return tuple(by[n] for n in names)
    return QUICK_CONFIGS if ctx.opts.quick else CONFIGS


def decode_groups(ctx, streams: list) -> list[tuple[Path, str | None]]:
    """The streams copied (once per suite) into one folder per registry: [(folder, registry)]."""
    if "decode_groups" not in ctx.cache:
        regs: list[str | None] = []
        for s in streams:
            if registry_of(ctx, s) not in regs:
                regs.append(registry_of(ctx, s))
        groups = []
        for i, reg in enumerate(regs):
            src = ctx.work / "decode_in" / f"g{i}"
            src.mkdir(parents=True, exist_ok=True)
            for s in streams:
                if registry_of(ctx, s) == reg:
                    shutil.copyfile(s.path, src / s.path.name)
            groups.append((src, reg))
        ctx.cache["decode_groups"] = groups
    return ctx.cache["decode_groups"]


def decode_runs(ctx, streams: list) -> dict[str, DecodeRun]:
    """Run (once per suite) every CPU configuration over `streams`; shared with the parity check."""
    runs = ctx.cache.setdefault("decode_runs", {})
    groups = decode_groups(ctx, streams)
    todo = [c for c in configs_for(ctx) if c.name not in runs]
    bar = ctx.bar(len(todo), "decode configs")
    for cfg in todo:
        bar.set_postfix_str(cfg.name)
        runs[cfg.name] = run_decoder_batch(groups, ctx.work / "decoded" / cfg.name, cfg,
                                           timeout=120 + 30 * len(streams))
        bar.update(1)
    bar.close()
    return runs
