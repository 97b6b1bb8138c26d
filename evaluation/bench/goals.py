"""The performance goals the report checks, each a figure with its limit (evaluation/BENCH.md)."""

from __future__ import annotations

import statistics

from evaluation.bench.plan import MIB, SIZE_8K, V3_LABELS
from evaluation.bench.tables import ReportData, _ok, _rss
from evaluation.bench.v3 import _v3_error, v3_ratios

GOAL_DECODE_S = 1.0            # 768x512 decode, start-up excluded
GOAL_SEARCH_RATIO = 2.0        # rate-search encode <= 2x fixed-step encode
GOAL_RSS_BYTES = 4e9           # 3840x2160 encode and decode peak RSS <= 4 GB
GOAL_CLI_BEYOND_TF_S = 1.0     # whole decoder/decode.sh call <= bare `import tensorflow` + 1 s
GOAL_V3_RATIO = 1.5            # bitstream v3 decode <= 1.5x v2 on CPU

# --------------------------------------------------------------------------- goals

def _mark(ok: bool) -> str:
    return "goal met" if ok else "NOT MET"


def goal_decode_768(d: ReportData) -> list[str]:
    r = d.get("768x512", "ours", "decode")
    if not _ok(r):
        return ["[not measured] decode 768x512 <= 1.0 s: no 768x512 decode in this run"
                + (f" ({r['error']})" if r else "")]
    st = r["stages"]
    return [f"[{_mark(r['median_s'] <= GOAL_DECODE_S)}] decode 768x512 <= {GOAL_DECODE_S:.1f} s (start-up "
            f"excluded): {r['median_s']:.2f} s median (first {r['first_s']:.2f} s); parse "
            f"{st.get('parse', 0):.2f} s, synthesis {st.get('synthesis', 0):.2f} s"]


def goal_search_ratio(d: ReportData) -> list[str]:
    ratios = []
    for (s, c, o), es in d.results.items():
        if c == "ours" and o == "encode_search":
            ef = d.get(s, "ours", "encode_fixed")
            if _ok(es) and _ok(ef):
                ratios.append((s, es["median_s"] / ef["median_s"], es["median_s"], ef["median_s"],
                               es.get("analyses"), es.get("probes")))
    if not ratios:
        return ["[not measured] rate-search vs fixed encode"]
    ok = all(r[1] <= GOAL_SEARCH_RATIO for r in ratios)
    detail = "; ".join(f"{s}: {r:.2f}x ({a:.2f} / {b:.2f} s, {n} analyses, {p} probes)"
                       for s, r, a, b, n, p in ratios)
    return [f"[{_mark(ok)}] encode with rate search <= {GOAL_SEARCH_RATIO:.0f}x fixed-step encode: {detail}"]


def goal_rss_4k(d: ReportData) -> list[str]:
    r4 = {o: d.get("3840x2160", "ours", o) for o in ("encode_search", "encode_fixed", "decode")}
    if not all(_ok(r) for r in r4.values()):
        return ["[not measured] 3840x2160 peak RSS <= 4 GB (size not in --sizes or a run failed)"]
    peaks = {o: _rss(r) * MIB for o, r in r4.items()}
    isolated = all(r.get("rss_isolated") for r in r4.values())
    ok = all(v <= GOAL_RSS_BYTES for v in peaks.values()) and isolated
    return [f"[{_mark(ok)}] 3840x2160 peak RSS <= 4 GB: " + ", ".join(f"{o} {v / 1e9:.2f} GB" for o, v in peaks.items())
            + ("" if isolated else " (not isolated: --inprocess)")]


def goal_8k(d: ReportData) -> list[str]:
    d8 = d.get(f"{SIZE_8K[0]}x{SIZE_8K[1]}", "ours", "decode")
    if d8 is None:
        return ["[not measured] 7680x4320 decodes without running out of memory (use --include-8k)"]
    if not _ok(d8):
        return [f"[NOT MET] 7680x4320 decode failed: {d8['error']}"]
    return [f"[goal met] 7680x4320 decodes without running out of memory: {d8['median_s']:.1f} s, peak RSS "
            f"{_rss(d8) / 1024:.2f} GiB ({_rss(d8) * MIB / 1e9:.2f} GB)"]


def goal_startup(d: ReportData) -> list[str]:
    dec = [r for r in d.startup.get("decoder", []) if _ok(r)]
    if dec and not dec[0].get("rss_isolated"):
        return ["[not measured] start-up / lazy loading: needs fresh processes (not --inprocess)"]
    if not dec:
        return ["[not measured] start-up / lazy loading"]
    r = dec[0]
    loaded, distinct = len(r["models_loaded"]), r.get("models_distinct")
    extra = r.get("encoder_side_modules", [])
    ok = loaded == 1 and not extra
    t = statistics.median([x.get("startup_s", float("nan")) for x in dec])
    imp = statistics.median([x.get("import_s", float("nan")) for x in dec])
    ld = statistics.median([x.get("load_s", float("nan")) for x in dec])
    unneeded = r.get("unneeded_modules", [])
    return [f"[{_mark(ok and not unneeded)}] start-up loads only the model the stream needs: decoder loaded "
            f"{loaded} of {distinct} distinct model(s), encoder-side modules imported: "
            f"{', '.join(extra) or 'none'}, packages it does not need: {', '.join(unneeded) or 'none'}; "
            f"start-up {t:.1f} s median (imports {imp:.1f} s, model load {ld:.2f} s)"]


def goal_cli(d: ReportData) -> list[str]:
    cli = d.cli
    goal = f"whole decoder/decode.sh call <= bare `import tensorflow` + {GOAL_CLI_BEYOND_TF_S:.1f} s"
    if cli is None:
        return [f"[not measured] {goal} ({'--inprocess' if d.args.inprocess else '--cli-runs 0, or no stream'})"]
    if "error" in cli:
        return [f"[NOT MET] {goal}: {cli['error']}"]
    m = cli["median_s"]
    return [f"[{_mark(cli['beyond_tf_s'] <= GOAL_CLI_BEYOND_TF_S)}] {goal}: {m['decode_sh']:.2f} s vs "
            f"{m['import_tensorflow']:.2f} s, {cli['beyond_tf_s']:+.2f} s (CPU {cli['cpu_beyond_tf_s']:+.2f} s), "
            f"median of {cli['runs']}, {cli['width']}x{cli['height']}; beyond TF imported as the decoder does "
            f"(no JAX): {cli['beyond_decoder_tf_s']:+.2f} s (CPU {cli['cpu_beyond_decoder_tf_s']:+.2f} s)"]


def goal_v3(d: ReportData) -> list[str]:
    """Only with --v3: the slice loop's decode cost on Kodak (its 1.5x bound) and the 8K decode."""
    if d.v3 is None:
        return []
    goal = f"bitstream v3 decode <= {GOAL_V3_RATIO:.1f}x v2 on CPU (Kodak)"
    why = _v3_error(d)
    if why:
        return [f"[NOT MET] {goal}: {why}"]
    dec, r = d.v3["decode"], v3_ratios(d.v3["decode"])
    lab = dec["labels"]
    km = {k: lab[k]["kmac_per_pixel"]["total"] for k in V3_LABELS}
    out = [f"[{_mark(max(r['wall'], r['cpu']) <= GOAL_V3_RATIO)}] {goal}: wall {r['wall']:.2f}x, CPU time "
           f"{r['cpu']:.2f}x (median over {len(dec['images'])} images of the per-image ratio; v2 "
           f"{lab['v2']['median_wall_s']:.2f} s, v3 {lab['v3']['median_wall_s']:.2f} s wall median); "
           f"{km['v2']:.1f} -> {km['v3']:.1f} kMAC/pixel"]
    k8 = d.v3.get("8k")
    if not k8:
        out.append(f"[not measured] {SIZE_8K[0]}x{SIZE_8K[1]} v3 decode memory (use --include-8k)")
        return out
    r2, r3 = (k8.get(k, {}).get("decode") for k in V3_LABELS)
    if not _ok(r3):
        out.append(f"[NOT MET] {SIZE_8K[0]}x{SIZE_8K[1]} v3 decode failed: {(r3 or {}).get('error', 'not run')}")
    else:
        v2 = f"{_rss(r2) / 1024:.2f} GiB, {r2['median_s']:.1f} s" if _ok(r2) else "failed"
        out.append(f"[goal met] {SIZE_8K[0]}x{SIZE_8K[1]} v3 decodes without running out of memory: "
                   f"{r3['median_s']:.1f} s, peak RSS {_rss(r3) / 1024:.2f} GiB (v2 on the same image: {v2})")
    return out


GOALS = (goal_decode_768, goal_search_ratio, goal_rss_4k, goal_8k, goal_startup, goal_cli, goal_v3)


def goals_section(d: ReportData) -> list[str]:
    return ["\nGOALS"] + [line for goal in GOALS for line in goal(d)]
