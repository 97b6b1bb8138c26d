"""Check 3, CPU/GPU decode parity, and the float-perturbation test of the parse path.

With a GPU visible: every stream is decoded by `python -m decoder` on the CPU
(CUDA_VISIBLE_DEVICES='') and, through conformance/children/gpu_decode.py, on the GPU
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

Bitstream v3 streams (the suite's own, if its models write v3, and always the
committed v3 goldens, suite.Context.v3_goldens) go through all of it, and their
integer slice loop (models/charm.py: slice networks, scale indexes, y_hat_q) is
perturbed too: re-run from the parsed symbols with numpy int64, TensorFlow
float64 and BLAS float64 with every slice network's channel order permuted, on
each stream and on a large-magnitude stress input per v3 model; no scale index,
mu_q or y_hat_q may move, and the BLAS re-run must give the decoder's own parse.
Every device comparison compares the parse integers (conformance.common.parse_ints:
symbols, scale indexes, mu_q, y_hat_q) and is tabled per stream with its version.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from conformance.common import PARSE_INTS, fmt_db, max_abs_diff, parse_ints, psnr
from conformance.decoding import (
    RECON_TOL,
    RuntimeConfig,
    Stores,
    compare_runs,
    configs_for,
    decode_groups,
    decode_parsed,
    decode_runs,
    describe_versions,
    run_decoder_batch,
    streams_for,
    subset,
    version_counts,
    version_of,
    where,
)
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


def _hyper_part(ctx, r: CheckResult, streams: list, variants: dict[str, Variant] | None = None,
                slice_variants: dict[str, SliceVariant] | None = None) -> None:
    from decoder import decode as D
    from models import scale_table as S
    variants = variants or exact_variants()
    stores = Stores(ctx)
    seen, rows, sens, slice_rows = set(), [], [], []
    for s in streams:
        data = s.path.read_bytes()
        models = stores.of(s)
        try:
            parsed = D.parse(data, models, D.Limits())
        except D.DecodeError as e:
            r.fail(f"cannot parse the stream: {e}", **where(s))
            continue
        model = models.get(parsed.header)
        if parsed.header.version == 3:
            slice_rows.append(_slice_stream(r, s, model, models.slice_nets(model.entry), parsed, slice_variants))
        key = (model.entry.hash, parsed.z_hat.tobytes(), parsed.header.delta_code)
        if key in seen:
            continue
        seen.add(key)
        res = compare_hyper(model.intnet, parsed.z_hat, parsed.header.delta_code, variants)
        # The decoder's own integers must be what its integer path gives (nothing float in between).
        mu0, ls0 = model.intnet.run(parsed.z_hat, "blas")
        if not np.array_equal(mu0, parsed.mu_q):
            r.fail("decoder's mu_q is not that of its integer hyper path", **where(s))
        if parsed.header.version != 3 and not np.array_equal(S.scale_index(ls0, parsed.header.delta_code),
                                                             parsed.scale_idx):
            r.fail("decoder's scale indices are not those of its integer hyper path", **where(s))
        for name, v in res.items():
            if v["moved"]:
                r.fail(f"hyper path '{name}' moved {v['moved']} of {v['values']} integer outputs "
                       f"({v['indices_moved']} scale indices) vs BLAS float64", **where(s))
        rows.append([s.image, f"{s.target:.2f}", f"v{parsed.header.version}", model.entry.name,
                     "x".join(map(str, parsed.z_hat.shape)),
                     *[f"{v['moved']}/{v['values']}" for v in res.values()], "-"])
    # Stress: every model on a large-magnitude synthetic z_hat, where a non-exact path does move.
    rng = np.random.default_rng(ctx.opts.seed)
    done = set()
    for models in list(stores.values()):
        for e in models.registry.entries:
            if e.hash in done:
                continue
            done.add(e.hash)
            model = models.decoder_model(e)
            c = model.intnet.layers[0].weight.shape[2]
            from models.intnet import Z_MAX
            z = np.clip(np.round(rng.normal(0, STRESS_SCALE, (8, 12, c))), -Z_MAX, Z_MAX).astype(np.int32)
            z[0, 0, :2] = Z_MAX, -Z_MAX
            res = compare_hyper(model.intnet, z, 128, {**variants, "float32": float32_run})
            f32 = res.pop("float32")
            for name, v in res.items():
                if v["moved"]:
                    r.fail(f"hyper path '{name}' moved {v['moved']} of {v['values']} integer outputs on a stress "
                           f"z_hat (model {e.name})")
            nets = models.slice_nets(e)
            rows.append([f"stress z ~ N(0, {STRESS_SCALE})", "-", "v3" if nets is not None else "v2", e.name,
                         "x".join(map(str, z.shape)), *[f"{v['moved']}/{v['values']}" for v in res.values()],
                         f"{f32['moved']}/{f32['values']}"])
            sens.append(f32["moved"])
            if nets is not None:
                slice_rows.append(_slice_stress(r, e.name, model, nets, rng, slice_variants))
    r.tables.append(Table("Integer hyper path under perturbation: outputs moved vs the decoder's BLAS float64 path "
                          "(float32: a deliberately inexact path, shows the test's sensitivity; not a failure)",
                          ["image", "target", "version", "model", "z_hat", *variants, "float32"], rows))
    r.figures["hyper_cases"] = len(rows)
    if sens:
        r.figures["float32_path_moved_outputs_on_stress_z"] = int(sum(sens))
    if slice_rows:
        r.tables.append(Table("Integer slice loop (bitstream v3) under perturbation: scale indexes, slice mu_q and "
                              "y_hat_q moved vs the decoder's BLAS float64 path, from the parsed symbols",
                              ["image", "target", "version", "model", "y_hat_q", "BLAS = decoder's parse",
                               *(slice_variants or exact_slice_variants())], slice_rows))
    r.figures["slice_loop_cases"] = len(slice_rows)


# -- bitstream v3: the integer slice loop under perturbation ---------------------------------------------

SliceVariant = Callable[[object, np.ndarray, np.ndarray, int, Callable], object]


def _permuted_net(net, rng):
    """A slice network with its input and hidden channels permuted: every sum in another order, same outputs."""
    from models.charm import IntConvNet

    class Permuted(IntConvNet):
        def run(self, x_q, backend="blas"):
            return super().run(np.asarray(x_q)[..., p_in], backend)
    layers, prev = [], rng.permutation(net.in_channels)
    p_in = prev
    for i, l in enumerate(net.layers):
        w, b = l.weight[:, :, prev, :], l.bias
        if i < len(net.layers) - 1:
            p = rng.permutation(w.shape[-1])
            w, b, prev = w[..., p], b[p], p
        layers.append(dataclasses.replace(l, weight=np.ascontiguousarray(w), bias=np.ascontiguousarray(b)))
    return Permuted(layers)


def permuted_slices(nets, seed: int = 0):
    """The model's IntCharm with every slice (and LRP) network's channel order permuted."""
    rng = np.random.default_rng(seed)
    return dataclasses.replace(nets, cc=[_permuted_net(n, rng) for n in nets.cc],
                               lrp=None if nets.lrp is None else [_permuted_net(n, rng) for n in nets.lrp])


def exact_slice_variants() -> dict[str, SliceVariant]:
    return {"int64": lambda nets, mu, ls, code, sym: nets.loop(mu, ls, code, sym, backend="int64"),
            "tf-float64": lambda nets, mu, ls, code, sym: nets.loop(mu, ls, code, sym, backend="tf64"),
            "blas-permuted-order": lambda nets, mu, ls, code, sym: permuted_slices(nets).loop(mu, ls, code, sym)}


SLICE_FIELDS = ("scale_idx", "mu_q", "y_hat_q")


def compare_slices(nets, mu_h, ls_h, code: int, symbols: np.ndarray, variants: dict[str, SliceVariant]):
    """(the BLAS slice loop fed `symbols`, {variant: {moved, values}}): integers moved vs BLAS, per variant."""
    depth = nets.slice_depth

    def sym(i, idx, mu):
        return symbols[..., i * depth:(i + 1) * depth]
    ref = nets.loop(mu_h, ls_h, code, sym)
    out = {}
    for name, fn in variants.items():
        res = fn(nets, mu_h, ls_h, code, sym)
        out[name] = {"values": int(sum(getattr(ref, f).size for f in SLICE_FIELDS)),
                     "moved": int(sum(np.count_nonzero(getattr(res, f) != getattr(ref, f)) for f in SLICE_FIELDS))}
    return ref, out


def _slice_stream(r: CheckResult, s, model, nets, parsed, variants) -> list:
    variants = variants or exact_slice_variants()
    mu_h, ls_h = model.intnet.run(parsed.z_hat, "blas")
    ref, res = compare_slices(nets, mu_h, ls_h, parsed.header.delta_code, parsed.symbols, variants)
    same = (np.array_equal(ref.scale_idx, parsed.scale_idx) and np.array_equal(ref.symbols, parsed.symbols)
            and np.array_equal(ref.y_hat_q, parsed.y_hat_q))
    if not same:
        r.fail("decoder's v3 parse (scale indexes, y_hat_q) is not what its integer slice loop gives", **where(s))
    for name, v in res.items():
        if v["moved"]:
            r.fail(f"slice loop '{name}' moved {v['moved']} of {v['values']} integers (scale indexes, mu_q, y_hat_q) "
                   f"vs BLAS float64", **where(s))
    return [s.image, f"{s.target:.2f}", "v3", model.entry.name, "x".join(map(str, parsed.y_hat_q.shape)),
            "yes" if same else "NO", *[f"{v['moved']}/{v['values']}" for v in res.values()]]


def _slice_stress(r: CheckResult, name: str, model, nets, rng, variants) -> list:
    """Large hyper outputs and symbols (every activation far from zero) through the slice loop variants."""
    from models import scale_table as S
    from models.intnet import ACT_MAX
    variants = variants or exact_slice_variants()
    shape = (6, 8, nets.latent_channels)
    mu_h = np.clip(np.round(rng.normal(0, ACT_MAX / 8, shape)), -ACT_MAX, ACT_MAX).astype(np.int32)
    ls_h = rng.integers(S.LOG2_MIN_Q, S.LOG2_MAX_Q + 1, shape).astype(np.int32)
    symbols = np.round(rng.normal(0, STRESS_SCALE, shape)).astype(np.int32)
    _, res = compare_slices(nets, mu_h, ls_h, 128, symbols, variants)
    for v_name, v in res.items():
        if v["moved"]:
            r.fail(f"slice loop '{v_name}' moved {v['moved']} of {v['values']} integers on a stress input "
                   f"(model {name})")
    return [f"stress mu ~ N(0, 2^19), s ~ N(0, {STRESS_SCALE})", "-", "v3", name, "x".join(map(str, shape)), "-",
            *[f"{v['moved']}/{v['values']}" for v in res.values()]]


def _synth_streams(streams: list) -> list:
    """The first SYNTH_STREAMS streams of each bitstream version."""
    out, per = [], {}
    for s in streams:
        v = version_of(s)
        if per.get(v, 0) < SYNTH_STREAMS:
            per[v] = per.get(v, 0) + 1
            out.append(s)
    return out


def _synth_part(ctx, r: CheckResult, streams: list, eps: float = WEIGHT_EPS) -> None:
    """Perturbed float synthesis weights: parse integers fixed, reconstruction within one level."""
    from decoder import decode as D
    ref_stores, pert_stores = Stores(ctx), Stores(ctx)
    rng = np.random.default_rng(ctx.opts.seed)
    perturbed, rows = set(), []
    for s in _synth_streams(streams):
        data = s.path.read_bytes()
        try:
            p0, a = decode_parsed(data, ref_stores.of(s))
            parsed = D.parse(data, pert_stores.of(s), D.Limits())
        except D.DecodeError as e:
            r.fail(f"cannot decode the stream: {e}", **where(s))
            continue
        model = pert_stores.of(s).get(parsed.header)
        if model.entry.hash not in perturbed:
            model.synthesis.set_weights([w * (1 + eps * rng.standard_normal(w.shape)).astype(np.float32)
                                         for w in model.synthesis.get_weights()])
            perturbed.add(model.entry.hash)
        p1, b = decode_parsed(data, pert_stores.of(s))
        k0, k1 = parse_ints(p0), parse_ints(p1)
        moved = [k for k in PARSE_INTS if k0[k] != k1[k]]
        d, p = max_abs_diff(a, b), psnr(a, b)
        if moved:
            r.fail(f"parse integers ({', '.join(moved)}) changed when float synthesis weights were perturbed",
                   **where(s))
        if d > RECON_TOL:
            r.fail(f"reconstruction moved by {d} levels (> {RECON_TOL}) under a {eps:g} relative weight perturbation",
                   **where(s))
        rows.append([s.image, f"{s.target:.2f}", f"v{k0['version']}", "yes" if not moved else "NO", d, fmt_db(p)])
    r.tables.append(Table(f"Float synthesis weights x (1 + {eps:g} N(0,1))",
                          ["image", "target", "version", "parse integers identical", "recon max |diff|",
                           "PSNR vs unperturbed (dB)"], rows))


def _compare(r: CheckResult, ref, run, streams: list, what: str, against: str, title: str, key: str) -> dict:
    """Per stream: symbols identical, reconstruction within RECON_TOL, PSNR; fails, table and `<key>_*` figures."""
    by_name = {s.path.name: s for s in streams}
    cmp = compare_runs(ref, run, [s.path.name for s in streams])
    for c in cmp:
        s = by_name[c.stream]
        if c.error:
            r.fail(c.error, **where(s))
        elif not c.symbols_equal:
            r.fail(f"{what} parse differs from {against} parse (symbols_sha256_16)", **where(s))
        elif c.ints_differ:
            r.fail(f"{what} parse integers differ from {against} parse: {', '.join(c.ints_differ)}", **where(s))
        elif c.max_diff > RECON_TOL:
            r.fail(f"{what} reconstruction max |diff| {c.max_diff} > {RECON_TOL} vs {against}", **where(s))
    r.tables.append(Table(title, ["image", "target", "version", "symbols identical",
                                  "y_hat_q (v3) / mu_q, scale idx identical", "recon max |diff|",
                                  f"PSNR {what.split()[0]} vs {against.split()[-1]} (dB)"],
                          [[by_name[c.stream].image, f"{by_name[c.stream].target:.2f}",
                            f"v{c.version if c.version is not None else version_of(by_name[c.stream])}",
                            "yes" if c.symbols_equal else "NO",
                            "-" if c.max_diff is None else ("yes" if not c.ints_differ else
                                                            "NO: " + ", ".join(c.ints_differ)),
                            c.max_diff if c.max_diff is not None else "-", fmt_db(c.psnr)] for c in cmp]))
    diffs = [c.max_diff for c in cmp if c.max_diff is not None]
    ps = [c.psnr for c in cmp if c.psnr is not None]
    figures = {f"{key}_streams": len(cmp), f"{key}_symbols_identical": sum(c.ints_equal for c in cmp),
               f"{key}_v3_streams": sum(1 for c in cmp if (c.version or version_of(by_name[c.stream])) == 3),
               f"{key}_max_recon_diff": max(diffs) if diffs else None,
               f"{key}_min_psnr_db": fmt_db(min(ps)) if ps else "-"}
    r.figures.update(figures)
    return figures


def _reference_and_other(ctx, streams: list, name: str, module: str):
    """The reference CPU decode, and a decode of the same streams by `python -m module` with the GPU visible
    and TF32 off: the two runs every parity comparison needs."""
    cpu = decode_runs(ctx, streams)[configs_for(ctx)[0].name]
    cfg = RuntimeConfig(name, 0, {"NVIDIA_TF32_OVERRIDE": "0"}, entry=f"{module}:main")
    run = run_decoder_batch(decode_groups(ctx, streams), ctx.work / f"decoded_{name}", cfg,
                            timeout=180 + 30 * len(streams), cpu_only=False)
    return cpu, run


def _gpu_part(ctx, r: CheckResult, streams: list, gpus: list[str]) -> None:
    cpu, run = _reference_and_other(ctx, streams, "gpu", "conformance.children.gpu_decode")
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
    cpu, run = _reference_and_other(ctx, streams, "jax", "conformance.children.jax_decode")
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
    if not subset(ctx):
        r.fail("no streams to test (nothing was encoded)")
    streams = streams_for(ctx, r)
    if not streams:
        r.summary = "no streams"
        return r
    counts = version_counts(streams)
    r.figures.update(streams=len(streams), streams_by_version={f"v{k}": n for k, n in counts.items()},
                     v3_streams=counts.get(3, 0))
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
            f"({f.get('gpu_v3_streams', 0)} v3) parse identically, recon max |diff| {f.get('gpu_max_recon_diff')}, "
            f"min PSNR {f.get('gpu_min_psnr_db')} dB"
            ) if gpus else GPU_MSG
    if backend == "jax" and "jax_streams" in f and f.get("gpu_backend") != "jax":
        head += (f"; JAX backend on {f.get('jax_platform')}: {f.get('jax_symbols_identical')}/{f.get('jax_streams')} "
                 f"({f.get('jax_v3_streams', 0)} v3) parse identically, recon max |diff| {f.get('jax_max_recon_diff')} vs TF")
    r.summary = (f"{head}; {len(streams)} streams ({describe_versions(streams)}); hyper path exact under "
                 f"{len(exact_variants())} perturbations on {r.figures.get('hyper_cases', 0)} z_hat(s), v3 slice loop "
                 f"on {r.figures.get('slice_loop_cases', 0)} case(s); {len(r.failures)} failure(s)")
    return r
