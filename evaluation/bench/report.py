"""The printed report (table.txt): header, one section per table, then the goals."""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from evaluation.bench.goals import goals_section
from evaluation.bench.plan import SIZE_8K
from evaluation.bench.probes import CLI_CALLS, CLI_LABELS
from evaluation.bench.tables import ReportData, _bytes_per_px, _med, _ok, _rss, fmib, fs, ratio, spread, table
from evaluation.bench.v3 import v3_8k_section, v3_complexity_section, v3_decode_section, v3_split_section


def command_line() -> str:
    return "python -m evaluation.bench " + shlex.join(sys.argv[1:]) if sys.argv and "bench" in sys.argv[0] else \
        "python -m evaluation.bench (called as a library)"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / (1 << 20):.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = ""
    try:
        load = f", load average {os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs{mem}{load}, nice {os.nice(0)}"


def report(args, registry, reg_desc, notes, results, startup, anchors, elapsed, cli: dict | None = None,
           v3: dict | None = None) -> str:
    """The printed report (table.txt): a header, then one section per table, then the goals."""
    d = ReportData(args, results, startup, anchors, cli, v3)
    L = header_section(args, reg_desc, notes, elapsed)
    for section in SECTIONS:
        L += section(d)
    return "\n".join(L)


def header_section(args, reg_desc: str, notes: list[str], elapsed: float) -> list[str]:
    return ["ratelock benchmark: " + command_line(),
            f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M')}; total {elapsed / 60:.1f} min",
            f"models: {reg_desc}",
            f"medians of {args.runs} run(s) per operation after a tiny warm-up (start-up excluded); each operation "
            f"in a fresh process{' (NO: --inprocess, peak RSS is not per operation)' if args.inprocess else ''}",
            *notes]


def encode_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        es, ef = d.get(s, "ours", "encode_search"), d.get(s, "ours", "encode_fixed")
        if not (es or ef) or s == f"{SIZE_8K[0]}x{SIZE_8K[1]}" and not es:
            continue
        row = [s, fs(_med(es)), spread(es), fs(_med(ef)), spread(ef), ratio(_med(es), _med(ef))]
        for a in d.anchors:
            ae = d.get(s, a, "encode")
            row += [fs(_med(ae)), ratio(_med(es), _med(ae))]
        row.append(f"{es.get('analyses', '-')}/{es.get('probes', '-')}" if _ok(es) else "-")
        rows.append(row)
    return ["\nENCODE, seconds (median); ours/anchor uses the rate-search encode",
            table(["size", "ours search", "min-max", "ours fixed", "min-max", "search/fixed", *d.anchor_header,
                   "analyses/probes"], rows)]


def refine_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        r, es = d.get(s, "ours", "encode_refine"), d.get(s, "ours", "encode_search")
        if not _ok(r):
            continue
        st = r.get("stages", {})
        rows.append([s, fs(_med(r)), ratio(_med(r), _med(es)), fs(st.get("refine")), fmib(_rss(r)),
                     fmib(_rss(es)), fs(r.get("refine_db"), 2), fs(r.get("bpp"), 4)])
    if not rows:
        return []
    return [f"\nREFINED ENCODE (rate search + {d.args.refine} latent-refinement steps per tile, one run): "
            "seconds, of which refining; peak RSS against the plain search; PSNR gain of the stream handed out",
            table(["size", "seconds", "x search", "refine s", "peak MiB", "search MiB", "gain dB", "bpp"], rows)]


def decode_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        r = d.get(s, "ours", "decode")
        if not r:
            continue
        row = [s, fs(_med(r)), spread(r), fs(r.get("first_s")) if _ok(r) else "-",
               fs(r["width"] * r["height"] / 1e6 / r["median_s"], 1) if _ok(r) else "-"]
        for a in d.anchors:
            ad = d.get(s, a, "decode")
            row += [fs(_med(ad)), ratio(_med(r), _med(ad))]
        rows.append(row)
    return ["\nDECODE, seconds (median; 'first' = first decode at this size in the process, after warm-up)",
            table(["size", "ours", "min-max", "ours first", "ours MP/s", *d.anchor_header], rows)]


def peak_rss_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        row = [s] + [fmib(_rss(d.get(s, "ours", o))) for o in ("encode_search", "encode_fixed", "decode")]
        for a in d.anchors:
            row += [fmib(_rss(d.get(s, a, "encode"))), fmib(_rss(d.get(s, a, "decode")))]
        r = d.get(s, "ours", "decode")
        row.append(fmib(r.get("rss_ready_mb")) if _ok(r) else "-")
        rows.append(row)
    return ["\nPEAK RSS, MiB (high-water mark of the operation's own process, VmHWM; for hevc the larger of "
            "the worker and its ffmpeg child, ru_maxrss of RUSAGE_CHILDREN); "
            "'dec ready' = decoder RSS after start-up, before decoding",
            table(["size", "ours enc search", "ours enc fixed", "ours dec",
                   *[x for a in d.anchors for x in (f"{a} enc", f"{a} dec")], "ours dec ready"], rows)]


def decode_memory_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        r = d.get(s, "ours", "decode")
        if not _ok(r) or not r.get("peak_rss_after_mb"):
            continue
        pa = r["peak_rss_after_mb"]
        rows.append([s, fmib(r.get("rss_ready_mb")), fmib(pa.get("parse")), fmib(pa.get("synthesis")),
                     fmib(pa.get("to_uint8")), fmib(r.get("peak_rss_mb")), _bytes_per_px(r)])
    return ["\nDECODE MEMORY, MiB: RSS when ready, then the process peak (VmHWM) after each stage of the "
            "first run; B/px = (peak - ready) / pixels",
            table(["size", "ready", "after parse", "after synthesis", "after to_uint8", "peak", "B/px"], rows)]


def rate_section(d: ReportData) -> list[str]:
    args, rows = d.args, []
    for s in d.sizes:
        es = d.get(s, "ours", "encode_search") or d.get(s, "ours", "encode_fixed")
        row = [s, fs(es.get("bpp"), 4) if _ok(es) else "-",
               (f"{es.get('model')}/{es.get('delta_code')}" if _ok(es) else "-")]
        for a in d.anchors:
            ae = d.get(s, a, "encode")
            row += [fs(ae.get("bpp"), 4) if _ok(ae) else "-", f"{ae.get('knob'):g}" if _ok(ae) else "-"]
        ef = d.get(s, "ours", "encode_fixed")
        row.append({True: "yes", False: "NO"}.get(ef.get("same_stream_as_search"), "-") if _ok(ef) else "-")
        rows.append(row)
    return [f"\nRATE of the coded streams, bpp (ours: rate search at {args.target:g}; jpeg2000: requested "
            f"{args.target:g}; hevc: " + ("QP rate-matched to the target per image" if args.hevc_qp == "match"
                                          else f"QP {args.hevc_qp}") + ")",
            table(["size", "ours", "ours model/delta code", *[x for a in d.anchors for x in (a, f"{a} knob")],
                   "fixed == search stream"], rows)]


def decode_split_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        r = d.get(s, "ours", "decode")
        if not _ok(r):
            continue
        st = r["stages"]
        parse = st.get("parse")
        z, hs, y = st.get("parse.range_decode_z"), st.get("parse.hyper_synthesis_int"), st.get("parse.range_decode_y")
        rest = st.get("parse.rest")
        syn = st.get("synthesis")
        rows.append([s, fs(r["median_s"]), fs(parse), fs(z, 3), fs(hs, 3), fs(y, 3), fs(rest, 3),
                     fs(st.get("dequantize"), 3), fs(syn), fs(st.get("to_uint8"), 3), fs(st.get("other"), 3),
                     f"{100 * (parse or 0) / r['median_s']:.0f}/{100 * (syn or 0) / r['median_s']:.0f}"])
    return ["\nDECODE SPLIT, seconds (median per stage): parse = range decode z + integer hyper-synthesis + "
            "range decode y (+ header, CRC, scale index)",
            table(["size", "total", "parse", "range z", "int h_s", "range y", "parse rest", "dequant",
                   "synthesis", "to_uint8", "other", "% parse/synth"], rows)]


def synthesis_profile_section(d: ReportData) -> list[str]:
    out = []
    for s in d.sizes:
        p = d.get(s, "ours", "profile_synthesis")
        if not _ok(p):
            continue
        rows = [[l["name"], l["kind"], "x".join(str(v) for v in l["out_shape"]), fs(l["gmacs"]), fs(l["median_s"], 3),
                 fs(2 * l["gmacs"] / l["median_s"], 1) if l["median_s"] > 0 and l["gmacs"] else "-"]
                for l in p["layers"]]
        tot = sum(l["gmacs"] for l in p["layers"])
        rows.append(["total", "", "", fs(tot), fs(p["median_s"], 3), fs(2 * tot / p["median_s"], 1)])
        out.append(f"\nSYNTHESIS PROFILE at {s}, layer by layer (eager, whole image, median of {d.args.runs}; TF "
                   f"threads intra {p['threads']['intra']} / inter {p['threads']['inter']} (0 = all cores), oneDNN "
                   f"{p['onednn']})")
        out.append(table(["layer", "kind", "output", "GMAC", "seconds", "GFLOP/s"], rows))
    return out


def encode_split_section(d: ReportData) -> list[str]:
    rows = []
    for s in d.sizes:
        for op in ("encode_search", "encode_fixed"):
            e = d.get(s, "ours", op)
            if not _ok(e):
                continue
            st = e["stages"]
            rows.append([s, op.replace("encode_", ""), fs(e["median_s"]), fs(st.get("analysis")),
                         fs(st.get("analysis.g_a")), fs(st.get("analysis.hyper_synthesis_int"), 3),
                         fs(st.get("code")), fs(st.get("range_encode")), fs(st.get("reconstruct")),
                         fs(st.get("other"), 3), f"{e.get('analyses')}/{e.get('probes')}"])
    return ["\nENCODE SPLIT, seconds (median per stage): analysis = g_a (tiled) + h_a + z coding + integer h_s, "
            "once per candidate model; code = quantise + range-code y, once per probe; reconstruct = synthesis "
            "to compare two in-band candidates",
            table(["size", "mode", "total", "analysis", "g_a", "int h_s", "code", "range enc", "reconstruct",
                   "other", "analyses/probes"], rows)]


def startup_section(d: ReportData) -> list[str]:
    rows = []
    for who, rs in d.startup.items():
        ok = [r for r in rs if _ok(r)]
        if not ok:
            if rs:
                rows.append([who, "ERROR: " + rs[0].get("error", "?")] + ["-"] * 9)
            continue

        def med(f, ok=ok):
            return statistics.median([f(r) for r in ok])
        interp = med(lambda r: r.get("interpreter_s", float("nan")))
        rows.append([who, fs(interp), fs(med(lambda r: r["imports"].get("numpy", 0))),
                     fs(med(lambda r: r["imports"].get("tensorflow", 0))),
                     fs(med(lambda r: r["imports"].get("tensorflow_compression", 0))),
                     fs(med(lambda r: r["imports"].get("codec", 0))),
                     fs(med(lambda r: r.get("load_s", r.get("init_s", 0)))),
                     fs(med(lambda r: r.get("trace_s", r.get("load_trace_s", 0)))),
                     fs(med(lambda r: r.get("startup_s", float("nan")))),
                     f"{len(ok[0]['models_loaded'])}/{ok[0].get('models_distinct')}",
                     fmib(med(lambda r: r.get("rss_ready_mb", float("nan"))))])
    return [f"\nSTART-UP, seconds (median of {d.args.runs} fresh processes): interpreter = spawn to worker main; "
            "load = registry + lazy model load (encoder: Encoder()); trace = first call on a tiny input "
            "(encoder: model load + trace of a 64x64 fixed encode)",
            table(["process", "interpreter", "numpy", "tensorflow", "tfc", "codec imports", "load", "trace",
                   "total to ready", "models loaded/distinct", "RSS ready MiB"], rows)]


def cli_section(d: ReportData) -> list[str]:
    cli = d.cli
    if not cli:
        return []
    if "error" in cli:
        return [f"\nCLI START-UP: ERROR: {cli['error']}"]
    rows = [[CLI_LABELS[k], fs(cli["median_s"][k]), f"{min(cli['wall_s'][k]):.2f}-{max(cli['wall_s'][k]):.2f}",
             fs(cli["cpu_median_s"][k])] for k in CLI_CALLS]
    rows.append(["decode.sh - import tensorflow", fs(cli["beyond_tf_s"]), "", fs(cli["cpu_beyond_tf_s"])])
    rows.append(["decode.sh - TF as the decoder imports it", fs(cli["beyond_decoder_tf_s"]), "",
                 fs(cli["cpu_beyond_decoder_tf_s"])])
    return [f"\nCLI START-UP, seconds (median of {cli['runs']} calls of each, interleaved, same interpreter): "
            f"a user's whole decode of the {cli['width']}x{cli['height']} stream ({cli['bytes']} bytes), start-up "
            "included, vs a bare TensorFlow import, and vs TensorFlow imported as the decoder does (without the "
            "JAX import TF makes when jax is installed); CPU = user + sys of the call",
            table(["call", "wall", "min-max", "CPU"], rows)]

SECTIONS = (encode_section, refine_section, decode_section, peak_rss_section, decode_memory_section, rate_section,
            decode_split_section, synthesis_profile_section, encode_split_section, startup_section, cli_section,
            v3_decode_section, v3_split_section, v3_complexity_section, v3_8k_section, goals_section)
