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
processes (conformance.children.worker's `decode` mode runs the decoder's main() once per
registry). The v3 goldens' reference parse must also equal their pinned symbol
and y_hat_q hashes. Results are tabled per stream with its bitstream version.
"""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np

from conformance.common import PARSE_INTS, child_env, fmt_db, max_abs_diff, parse_ints, psnr, python
from conformance.decoding import (
    QUICK_IMAGES,
    Comparison,
    DecodeRun,
    Stores,
    compare_runs,
    configs_for,
    decode_parsed,
    decode_runs,
    describe_versions,
    streams_for,
    subset,
    version_counts,
    version_of,
    where,
)
from conformance.report import CheckResult, Table


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
