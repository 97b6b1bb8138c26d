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
decoder); only the float synthesis may wobble, by at most one level. Every
decode (each configuration's process and the in-process one) also reports the
parse-level integers (conformance.common.parse_ints: symbols, scale indexes,
mu_q and, for bitstream v3, the slice loop's y_hat_q) and they must equal the
reference's.

Streams: the suite's encoded streams plus, always, the bitstream v3 goldens
(suite.Context.v3_goldens), decoded with their own registry in the same
processes (conformance.worker's `decode` mode runs the decoder's main() once per
registry). The v3 goldens' reference parse must also equal their pinned symbol
and y_hat_q hashes. Results are tabled per stream with its bitstream version.
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

from conformance.common import PARSE_INTS, child_env, fmt_db, load_png, max_abs_diff, parse_ints, psnr, python
from conformance.report import CheckResult, Table

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
    `python -m conformance.worker decode` runs cfg.entry (the decoder's main()) with
    `--dir FOLDER OUT --info [--registry R]` once per group and adds each stream's parse integers."""
    env = child_env(drop=RUNTIME_VARS)
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(cfg.env)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [python(), "-m", "conformance.worker", "decode", "--entry", cfg.entry]
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
        from conformance.suite import stream_version
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
           "--out", str(out), "--best-effort", "--refine", str(ctx.opts.refine)]
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


def pinned_mismatch(s, ints: dict | None) -> list[str]:
    """Parse hashes of a stream with pinned values (the v3 goldens) that differ from them."""
    exp = getattr(s, "expected", None) or {}
    if not exp:
        return []
    if ints is None:
        return ["no parse integers reported"]
    return [f"{k} {ints.get(k)} != pinned {v}" for k, v in exp.items() if ints.get(k) != v]


def stream_rows(streams: list, ref: DecodeRun, cmps: dict[str, list[Comparison]]) -> list[list]:
    """The per-stream table: version, how many runs decoded it, parse integers and pixels against the reference."""
    rows = []
    for s in streams:
        name = s.path.name
        cs = [c for run in cmps.values() for c in run if c.stream == name]
        a = ref.results.get(name) or {}
        v = (a.get("version") if a.get("version") is not None else version_of(s))
        latent = "y_hat_q" if v == 3 else "mu_q"
        diffs = [c.max_diff for c in cs if c.max_diff is not None]
        pin = pinned_mismatch(s, a.get("ints")) if getattr(s, "expected", None) else None
        rows.append([name, getattr(s, "source", "encoded"), f"v{v}", getattr(s, "model", "") or "-", f"{s.target:.2f}",
                     f"{sum(1 for c in cs if c.max_diff is not None)}/{len(cs)}",
                     f"{sum(c.symbols_equal and 'scale_idx' not in c.ints_differ for c in cs)}/{len(cs)}",
                     f"{latent}: {sum(c.symbols_equal and latent not in c.ints_differ for c in cs)}/{len(cs)}",
                     "-" if pin is None else ("yes" if not pin else "NO"), max(diffs) if diffs else "-"])
    return rows


STREAM_HEADERS = ["stream", "source", "version", "model", "target", "decoded", "symbols + scale idx = ref",
                  "y_hat_q (v3) / mu_q (v2) = ref", "= pinned hashes", "max |diff|"]


def check(ctx) -> CheckResult:
    from decoder import decode as D
    r = CheckResult("determinism", True, "")
    encoded = subset(ctx)
    if not encoded:
        r.fail("no streams to test (nothing was encoded)")
    streams = streams_for(ctx, r)
    if not streams:
        r.summary = "no streams"
        return r
    by_name = {s.path.name: s for s in streams}
    if ctx.opts.quick:
        r.notes.append(f"--quick: streams of the first {QUICK_IMAGES} images only (and every v3 golden)")

    images = {i.name: i for i in ctx.images}
    for s in encoded:
        if s.image not in images:
            r.fail("no source image for this stream: encode repeat NOT checked", **where(s))
    if any(s.image in images for s in encoded):
        enc_rows = _encode_checks(ctx, r, [s for s in encoded if s.image in images])
        r.tables.append(Table("Encoding the same image twice (bytes compared with the stream on disk)",
                              ["how", "streams", "identical"], enc_rows))

    # Decode twice in this process.
    stores = Stores(ctx)
    inproc = DecodeRun("in-process", 0, 0.0, device="CPU (this process)")
    t0 = time.perf_counter()
    same = 0
    bar = ctx.bar(len(streams), "decode twice")
    psnrs = []
    for s in streams:
        data = s.path.read_bytes()
        try:
            p1, a = decode_parsed(data, stores.of(s))
            p2, b = decode_parsed(data, stores.of(s))
        except D.DecodeError as e:
            r.fail(f"decoder rejected the stream: {e}", **where(s))
            bar.update(1)
            continue
        k1, k2 = parse_ints(p1), parse_ints(p2)
        inproc.results[s.path.name] = {"symbols": k1["symbols"], "rgb": a, "error": "",
                                       "ints": {k: k1[k] for k in PARSE_INTS}, "version": k1["version"]}
        if k1 == k2 and np.array_equal(a, b):
            same += 1
        else:
            differ = [k for k in PARSE_INTS if k1[k] != k2[k]]
            r.fail(f"two decodes in one process differ (parse integers {', '.join(differ) or 'same'}, "
                   f"max |diff| {max_abs_diff(a, b)})", **where(s))
        if s.image in images and images[s.image].rgb is not None:
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
    rows, cmps = [], {}
    for run, cfg in [(runs[c.name], c) for c in cfgs] + [(inproc, None)]:
        cmp = cmps[run.name] = compare_runs(ref, run, names)
        for c in cmp:
            if not c.ok:
                r.fail(f"{run.name}: {c.what(ref.name)}", **where(by_name[c.stream]))
        diffs = [c.max_diff for c in cmp if c.max_diff is not None]
        ps = [c.psnr for c in cmp if c.psnr is not None]
        rows.append([run.name, cfg.threads if cfg else "-", cfg.describe() if cfg else "this process, as configured",
                     f"{sum(1 for c in cmp if c.max_diff is not None)}/{len(names)}",
                     f"{sum(c.ints_equal for c in cmp)}/{len(names)}", max(diffs) if diffs else "-",
                     fmt_db(min(ps)) if ps else "-", f"{run.seconds:.1f}"])
    r.tables.append(Table(f"Decoding in separate processes (reference: {ref.name}; all with CUDA_VISIBLE_DEVICES='')",
                          ["configuration", "threads", "environment", "decoded", "parse integers = ref",
                           "max |diff|", "min PSNR vs ref (dB)", "seconds"], rows))

    # Every v3 stream must have reported y_hat_q; the goldens' reference parse must be the pinned one.
    for s in streams:
        a = ref.results.get(s.path.name) or {}
        if not a.get("symbols"):
            continue                           # already failed: the reference did not decode it
        if version_of(s) == 3 and not (a.get("ints") or {}).get("y_hat_q"):
            r.fail(f"{ref.name} reported no y_hat_q for a bitstream v3 stream: v3 parse NOT compared", **where(s))
        for m in pinned_mismatch(s, a.get("ints")):
            r.fail(f"{ref.name} parse differs from the committed golden: {m}", **where(s))
    r.tables.append(Table(f"Per stream (bitstream version; parse integers and pixels of {len(cmps)} decodes "
                          f"against {ref.name})", STREAM_HEADERS, stream_rows(streams, ref, cmps)))

    all_diffs = [row[5] for row in rows if row[5] != "-"]
    counts = version_counts(streams)
    r.figures.update(streams=len(streams), streams_by_version={f"v{k}": n for k, n in counts.items()},
                     v3_streams=counts.get(3, 0), configurations=len(cfgs),
                     max_recon_diff=max(all_diffs) if all_diffs else None)
    r.summary = (f"{len(streams)} streams ({describe_versions(streams)}): encode repeat + separate CLI process, "
                 f"decode twice, {len(cfgs)} process configurations, parse integers (v3: symbols, scale indexes, "
                 f"y_hat_q) compared; max recon |diff| {r.figures['max_recon_diff']}; {len(r.failures)} failure(s)")
    return r
