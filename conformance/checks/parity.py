"""Check 3, CPU/GPU decode parity, and the float-perturbation test of the parse path.

With a GPU visible: every stream is decoded by `python -m decoder` on the CPU
(CUDA_VISIBLE_DEVICES='') and, through conformance/gpu_decode.py, on the GPU
with TF32 disabled. The GPU process must prove it used the GPU (non-zero peak
GPU memory), otherwise nothing is claimed. Symbols must be identical and
reconstructions within max |diff| <= 1; max |diff| and PSNR are reported.

Without a GPU the result says exactly GPU_MSG. In both cases the parse path is
perturbed the ways a GPU (or another BLAS) would perturb it, and its integers
must not move:
- the integer hyper-synthesis run by numpy-BLAS float64 (what the decoder
  uses), numpy int64, TensorFlow float64 convolutions, and BLAS float64 with
  every channel order permuted (a different summation order in every layer);
- the float synthesis weights scaled by (1 + 1e-6 N(0,1)): parsed symbols must
  be unchanged (the parse never touches float weights), and the reconstruction
  may move by at most one level.
A float32 hyper path is also run, only to show how many scale indices a
non-exact path would flip (the test's sensitivity); it is not a failure.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from conformance.checks.determinism import (
    RECON_TOL,
    RuntimeConfig,
    compare_runs,
    configs_for,
    decode_in_process,
    decode_runs,
    run_decoder_batch,
    subset,
)
from conformance.common import fmt_db, max_abs_diff, psnr
from conformance.report import CheckResult, Table

GPU_MSG = "GPU: not available, parity proven on CPU configurations only"
WEIGHT_EPS = 1e-6
STRESS_SCALE = 300
SYNTH_STREAMS = 3


def visible_gpus() -> list[str]:
    import tensorflow as tf
    return [d.name for d in tf.config.list_physical_devices("GPU")]


# -- the integer hyper path under perturbation ---------------------------------------------------

def tf_float64_run(net, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An independent implementation: TensorFlow float64 convolutions on the CPU (models/intnet.py)."""
    return net.run(z_hat, "tf64")


def permuted_run(net, z_hat: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Same network with input and hidden channels permuted: every sum is taken in another order."""
    from models.intnet import IntHyperSynthesis
    rng = np.random.default_rng(seed)
    layers, prev = [], rng.permutation(net.layers[0].weight.shape[2])
    z = np.asarray(z_hat)[..., prev]
    for i, l in enumerate(net.layers):
        w = l.weight[:, :, prev, :]
        b = l.bias
        if i < len(net.layers) - 1:
            p = rng.permutation(w.shape[-1])
            w, b, prev = w[..., p], b[p], p
        layers.append(dataclasses.replace(l, weight=np.ascontiguousarray(w), bias=np.ascontiguousarray(b)))
    return IntHyperSynthesis(layers).run(z, "blas")


def float32_run(net, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A deliberately non-exact hyper path (float32 accumulation), for the sensitivity figure only."""
    from models import intnet
    from models import scale_table as S
    a = np.clip(np.asarray(z_hat, np.int64), -intnet.Z_MAX, intnet.Z_MAX).astype(np.float32)
    for l in net.layers:
        w = l.weight.astype(np.float32)
        acc = (intnet._deconv_same(a, w, l.stride, np.float32) if l.kind == "deconv"
               else intnet._conv_same(a, w, np.float32)) + l.bias.astype(np.float32)
        if l.relu:
            acc = np.maximum(acc, 0)
        k = l.in_frac + l.w_frac - l.out_frac
        if k > 0:
            a = np.floor((acc + np.float32(2.0 ** (k - 1))) / np.float32(2.0 ** k))
        else:
            a = acc * np.float32(2.0 ** -k)
        a = np.clip(a, -intnet.ACT_MAX, intnet.ACT_MAX)
    out = a.astype(np.int64).astype(np.int32)
    m = out.shape[-1] // 2
    return out[..., :m], np.clip(out[..., m:], S.LOG2_MIN_Q, S.LOG2_MAX_Q)


Variant = Callable[[object, np.ndarray], tuple[np.ndarray, np.ndarray]]


def exact_variants() -> dict[str, Variant]:
    return {"int64": lambda net, z: net.run(z, "int64"), "tf-float64": tf_float64_run,
            "blas-permuted-order": permuted_run}


def compare_hyper(net, z_hat: np.ndarray, delta_code: int, variants: dict[str, Variant]) -> dict[str, dict]:
    """Each variant against the decoder's own path (blas): count moved mu / log2 sigma / scale indices."""
    from models import scale_table as S
    mu0, ls0 = net.run(z_hat, "blas")
    idx0 = S.scale_index(ls0, delta_code)
    out = {}
    for name, fn in variants.items():
        mu, ls = fn(net, z_hat)
        idx = S.scale_index(ls, delta_code)
        out[name] = {"values": int(mu0.size + ls0.size),
                     "moved": int(np.count_nonzero(mu != mu0) + np.count_nonzero(ls != ls0)),
                     "indices_moved": int(np.count_nonzero(idx != idx0)), "indices": int(idx0.size)}
    return out


def _hyper_part(ctx, r: CheckResult, streams: list, variants: dict[str, Variant] | None = None) -> None:
    from decoder import decode as D
    variants = variants or exact_variants()
    models = D.ModelCache(ctx.opts.registry)
    seen, rows, sens = set(), [], []
    for s in streams:
        data = s.path.read_bytes()
        try:
            parsed = D.parse(data, models, D.Limits())
        except D.DecodeError as e:
            r.fail(f"cannot parse the encoder's stream: {e}", image=s.image, target=s.target)
            continue
        model = models.get(parsed.header)
        key = (model.entry.hash, parsed.z_hat.tobytes(), parsed.header.delta_code)
        if key in seen:
            continue
        seen.add(key)
        res = compare_hyper(model.intnet, parsed.z_hat, parsed.header.delta_code, variants)
        # The decoder's own indices must be what its integer path gives (nothing float in between).
        mu0, ls0 = model.intnet.run(parsed.z_hat, "blas")
        from models import scale_table as S
        if not np.array_equal(S.scale_index(ls0, parsed.header.delta_code), parsed.scale_idx):
            r.fail("decoder's scale indices are not those of its integer hyper path", image=s.image, target=s.target)
        for name, v in res.items():
            if v["moved"]:
                r.fail(f"hyper path '{name}' moved {v['moved']} of {v['values']} integer outputs "
                       f"({v['indices_moved']} scale indices) vs BLAS float64", image=s.image, target=s.target)
        rows.append([s.image, f"{s.target:.2f}", model.entry.name, "x".join(map(str, parsed.z_hat.shape)),
                     *[f"{v['moved']}/{v['values']}" for v in res.values()], "-"])
    # Stress: every model on a large-magnitude synthetic z_hat, where a non-exact path does move.
    rng = np.random.default_rng(ctx.opts.seed)
    done = set()
    for e in models.registry.entries:
        if e.hash in done:
            continue
        done.add(e.hash)
        model = models.get(D.Header(e.target_index, e.hash16, 1, 1, 128))
        c = model.intnet.layers[0].weight.shape[2]
        from models.intnet import Z_MAX
        z = np.clip(np.round(rng.normal(0, STRESS_SCALE, (8, 12, c))), -Z_MAX, Z_MAX).astype(np.int32)
        z[0, 0, :2] = Z_MAX, -Z_MAX
        res = compare_hyper(model.intnet, z, 128, {**variants, "float32": float32_run})
        f32 = res.pop("float32")
        for name, v in res.items():
            if v["moved"]:
                r.fail(f"hyper path '{name}' moved {v['moved']} of {v['values']} integer outputs on a stress z_hat "
                       f"(model {e.name})")
        rows.append([f"stress z ~ N(0, {STRESS_SCALE})", "-", e.name, "x".join(map(str, z.shape)),
                     *[f"{v['moved']}/{v['values']}" for v in res.values()], f"{f32['moved']}/{f32['values']}"])
        sens.append(f32["moved"])
    r.tables.append(Table("Integer hyper path under perturbation: outputs moved vs the decoder's BLAS float64 path "
                          "(float32: a deliberately inexact path, shows the test's sensitivity; not a failure)",
                          ["image", "target", "model", "z_hat", *variants, "float32"], rows))
    r.figures["hyper_cases"] = len(rows)
    if sens:
        r.figures["float32_path_moved_outputs_on_stress_z"] = int(sum(sens))


def _synth_part(ctx, r: CheckResult, streams: list, eps: float = WEIGHT_EPS) -> None:
    """Perturbed float synthesis weights: symbols fixed, reconstruction within one level."""
    from decoder import decode as D
    ref_models, pert_models = D.ModelCache(ctx.opts.registry), D.ModelCache(ctx.opts.registry)
    rng = np.random.default_rng(ctx.opts.seed)
    perturbed, rows = set(), []
    for s in streams[:SYNTH_STREAMS]:
        data = s.path.read_bytes()
        try:
            h0, a = decode_in_process(data, ref_models)
            parsed = D.parse(data, pert_models, D.Limits())
        except D.DecodeError as e:
            r.fail(f"cannot decode the encoder's stream: {e}", image=s.image, target=s.target)
            continue
        model = pert_models.get(parsed.header)
        if model.entry.hash not in perturbed:
            model.synthesis.set_weights([w * (1 + eps * rng.standard_normal(w.shape)).astype(np.float32)
                                         for w in model.synthesis.get_weights()])
            perturbed.add(model.entry.hash)
        h1, b = decode_in_process(data, pert_models)
        d, p = max_abs_diff(a, b), psnr(a, b)
        if h1 != h0:
            r.fail("parsed symbols changed when float synthesis weights were perturbed", image=s.image, target=s.target)
        if d > RECON_TOL:
            r.fail(f"reconstruction moved by {d} levels (> {RECON_TOL}) under a {eps:g} relative weight perturbation",
                   image=s.image, target=s.target)
        rows.append([s.image, f"{s.target:.2f}", "yes" if h1 == h0 else "NO", d, fmt_db(p)])
    r.tables.append(Table(f"Float synthesis weights x (1 + {eps:g} N(0,1))",
                          ["image", "target", "symbols identical", "recon max |diff|", "PSNR vs unperturbed (dB)"],
                          rows))


def _compare(r: CheckResult, ref, run, streams: list, what: str, against: str, title: str, key: str) -> dict:
    """Per stream: symbols identical, reconstruction within RECON_TOL, PSNR; fails, table and `<key>_*` figures."""
    by_name = {s.path.name: s for s in streams}
    cmp = compare_runs(ref, run, [s.path.name for s in streams])
    for c in cmp:
        s = by_name[c.stream]
        if c.error:
            r.fail(c.error, image=s.image, target=s.target)
        elif not c.symbols_equal:
            r.fail(f"{what} parse differs from {against} parse (symbols_sha256_16)", image=s.image, target=s.target)
        elif c.max_diff > RECON_TOL:
            r.fail(f"{what} reconstruction max |diff| {c.max_diff} > {RECON_TOL} vs {against}",
                   image=s.image, target=s.target)
    r.tables.append(Table(title, ["image", "target", "symbols identical", "recon max |diff|",
                                  f"PSNR {what.split()[0]} vs {against.split()[-1]} (dB)"],
                          [[by_name[c.stream].image, f"{by_name[c.stream].target:.2f}",
                            "yes" if c.symbols_equal else "NO", c.max_diff if c.max_diff is not None else "-",
                            fmt_db(c.psnr)] for c in cmp]))
    diffs = [c.max_diff for c in cmp if c.max_diff is not None]
    ps = [c.psnr for c in cmp if c.psnr is not None]
    figures = {f"{key}_streams": len(cmp), f"{key}_symbols_identical": sum(c.symbols_equal for c in cmp),
               f"{key}_max_recon_diff": max(diffs) if diffs else None,
               f"{key}_min_psnr_db": fmt_db(min(ps)) if ps else "-"}
    r.figures.update(figures)
    return figures


def _reference_and_other(ctx, streams: list, name: str, module: str):
    """The reference CPU decode, and a decode of the same streams by `python -m module` with the GPU visible
    and TF32 off: the two runs every parity comparison needs."""
    cpu = decode_runs(ctx, streams)[configs_for(ctx)[0].name]
    cfg = RuntimeConfig(name, 0, {"NVIDIA_TF32_OVERRIDE": "0"})
    run = run_decoder_batch(ctx.work / "decode_in", ctx.work / f"decoded_{name}", ctx.opts.registry, cfg,
                            timeout=180 + 30 * len(streams), module=("-m", module), cpu_only=False)
    return cpu, run


def _gpu_part(ctx, r: CheckResult, streams: list, gpus: list[str]) -> None:
    cpu, run = _reference_and_other(ctx, streams, "gpu", "conformance.gpu_decode")
    rep = run.meta.get("gpu_report") or {}
    r.figures.update(gpu=", ".join(gpus), gpu_device=rep.get("device_name", "?"),
                     gpu_peak_bytes=rep.get("peak_bytes"), tf32_enabled=rep.get("tf32"))
    if not rep.get("peak_bytes"):
        r.fail(f"GPU visible ({', '.join(gpus)}) but the GPU decode process did not run on it "
               f"(rc={run.rc}: {(run.stderr.strip().splitlines() or ['no report'])[-1]}): parity NOT measured")
        return
    if rep.get("tf32"):
        r.fail("TF32 was enabled in the GPU decode process")
    _compare(r, cpu, run, streams, "GPU", "CPU", f"CPU ({cpu.name}) vs GPU ({rep.get('device_name', '?')}, TF32 off)",
             "gpu")


def _jax_part(ctx, r: CheckResult, streams: list) -> None:
    """The decoder's JAX synthesis backend (decoder/jax_synthesis.py) against the TF CPU decode, on the device
    JAX finds: a GPU where there is one (the lent accelerator has JAX but no TensorFlow), else the CPU."""
    cpu, run = _reference_and_other(ctx, streams, "jax", "conformance.jax_decode")
    rep = run.meta.get("jax_report") or {}
    on_gpu = rep.get("platform") == "gpu" and bool(rep.get("peak_bytes"))
    r.figures.update(jax_platform=rep.get("platform", "?"), jax_device=rep.get("device", "?"), jax=rep.get("jax"),
                     jax_matmul_precision=rep.get("matmul_precision"), jax_peak_bytes=rep.get("peak_bytes"))
    if not rep:
        r.fail(f"the JAX decode process gave no report (rc={run.rc}: "
               f"{(run.stderr.strip().splitlines() or ['no output'])[-1]}): JAX parity NOT measured")
        return
    if rep.get("platform") == "gpu" and not on_gpu:
        r.fail("JAX saw a GPU but the decode process used no GPU memory: GPU parity NOT measured")
    if rep.get("matmul_precision") != "highest":
        r.fail(f"JAX matmul precision {rep.get('matmul_precision')!r}: reduced precision (TF32) is not allowed")
    where = f"JAX on {rep.get('device', '?')} ({rep.get('platform', '?')})"
    f = _compare(r, cpu, run, streams, where, "the TF CPU",
                 f"TF CPU ({cpu.name}) vs {where}, matmul precision {rep.get('matmul_precision')}", "jax")
    r.figures["jax_seconds"] = round(run.seconds, 1)
    if on_gpu:      # measured on a real GPU: this is the GPU parity the report asks for
        r.figures.update({k.replace("jax_", "gpu_", 1): v for k, v in f.items()},
                         gpu=rep.get("device"), gpu_device=rep.get("device"), gpu_backend="jax")


def check(ctx, gpus: list[str] | None = None) -> CheckResult:
    r = CheckResult("parity", True, "")
    streams = subset(ctx)
    if not streams:
        r.fail("no streams to test (nothing was encoded)")
        r.summary = "no streams"
        return r
    backend = getattr(ctx.opts, "gpu_backend", "tf")
    gpus = (visible_gpus() if backend == "tf" else []) if gpus is None else gpus
    t0 = time.perf_counter()
    if gpus:
        _gpu_part(ctx, r, streams, gpus)
    else:
        r.figures["gpu"] = GPU_MSG
    if backend == "jax":
        _jax_part(ctx, r, streams)
        gpus = [r.figures["gpu"]] if r.figures.get("gpu_backend") == "jax" else gpus
    _hyper_part(ctx, r, streams)
    _synth_part(ctx, r, streams)
    r.figures["seconds_perturbation"] = round(time.perf_counter() - t0, 1)
    f = r.figures
    head = (f"GPU {f.get('gpu_device', '')}: {f.get('gpu_symbols_identical', 0)}/{f.get('gpu_streams', 0)} streams "
            f"parse identically, recon max |diff| {f.get('gpu_max_recon_diff')}, min PSNR {f.get('gpu_min_psnr_db')} dB"
            ) if gpus else GPU_MSG
    if backend == "jax" and "jax_streams" in f and f.get("gpu_backend") != "jax":
        head += (f"; JAX backend on {f.get('jax_platform')}: {f.get('jax_symbols_identical')}/{f.get('jax_streams')} "
                 f"parse identically, recon max |diff| {f.get('jax_max_recon_diff')} vs TF")
    r.summary = (f"{head}; hyper path exact under {len(exact_variants())} perturbations on "
                 f"{r.figures.get('hyper_cases', 0)} z_hat(s); {len(r.failures)} failure(s)")
    return r
