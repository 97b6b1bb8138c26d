"""Formatting helpers, the data every report section reads (ReportData), and bench.csv."""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.bench.plan import MIB, SIZE_8K
from evaluation.bench.probes import CLI_CALLS

# --------------------------------------------------------------------------- formatting helpers

def fs(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def fmib(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"


def ratio(a: Any, b: Any) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def spread(res: dict | None) -> str:
    return f"{res['min_s']:.2f}-{res['max_s']:.2f}" if _ok(res) else "-"


def table(header: list[str], rows: list[list[str]]) -> str:
    cols = list(zip(header, *rows)) if rows else [(h,) for h in header]
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _ok(res: dict | None) -> bool:
    return bool(res) and "error" not in res


def _med(res: dict | None) -> float | None:
    return res.get("median_s") if _ok(res) else None


def _rss(res: dict | None) -> float | None:
    """Peak RSS of the operation: the worker itself, or its ffmpeg child for the ffmpeg anchors."""
    if not _ok(res):
        return None
    if res.get("op", "").startswith("anchor"):
        return max(res.get("peak_rss_mb", 0.0), res.get("peak_rss_children_mb", 0.0))
    return res.get("peak_rss_mb")

CSV_FIELDS = ["size", "codec", "op", "runs", "median_s", "min_s", "max_s", "first_s", "times", "mpix_per_s", "bytes",
              "bpp", "peak_rss_mib", "rss_ready_mib", "rss_isolated", "startup_s", "interpreter_s", "import_s",
              "load_s", "trace_s", "init_s", "load_trace_s", "models_loaded", "models_distinct", "model", "delta_code",
              "analyses", "probes", "same_stream_as_search", "knob", "refine_db", "error"]


def _row(size: str, codec: str, op: str, r: dict) -> dict:
    row = {"size": size, "codec": codec, "op": op, "error": r.get("error", "")}
    if _ok(r):
        row.update({k: r.get(k, "") for k in ("median_s", "min_s", "max_s", "first_s", "bytes", "bpp", "startup_s",
                                              "interpreter_s", "import_s", "load_s", "trace_s", "init_s",
                                              "load_trace_s", "models_distinct", "model", "delta_code", "analyses",
                                              "probes", "same_stream_as_search", "knob", "rss_isolated")})
        row["runs"] = len(r.get("times", []))
        row["times"] = ";".join(f"{t:.4f}" for t in r.get("times", []))
        if r.get("width") and r.get("median_s"):
            row["mpix_per_s"] = r["width"] * r["height"] / 1e6 / r["median_s"]
        row["peak_rss_mib"] = _rss(r)
        row["rss_ready_mib"] = r.get("rss_ready_mb", "")
        row["models_loaded"] = len(r.get("models_loaded", []))
        for k, v in r.get("stages", {}).items():
            row[f"stage_{k}_s"] = v
        for k, v in r.get("imports", {}).items():
            row[f"import_{k}_s"] = v
    return row


def write_csv(path: Path, results: dict, startup: dict, cli: dict | None = None, v3: dict | None = None) -> None:
    rows = [_row(*k, r) for k, r in results.items()]
    if v3 and _ok(v3.get("decode")):
        for k, x in v3["decode"]["labels"].items():
            rows.append({"size": "kodak", "codec": f"ours_{k}", "op": "decode_kodak", "runs": len(
                v3["decode"]["images"]), "median_s": x["median_wall_s"], "min_s": x["min_wall_s"],
                "max_s": x["max_wall_s"], "cpu_median_s": x["median_cpu_s"], "bpp": x["mean_bpp"], "model": x["model"],
                "delta_code": v3["code"], **{f"kmac_{n}": v for n, v in x["kmac_per_pixel"].items()},
                **{f"stage_{n}_s": v for n, v in x["stages"].items()}, "error": ""})
    for k, ops in ((v3 or {}).get("8k") or {}).items():
        rows += [_row(f"{SIZE_8K[0]}x{SIZE_8K[1]}", f"ours_{k}", op, r) for op, r in ops.items()]
    for who, rs in startup.items():
        rows += [_row("-", "ours", f"startup_{who}", r) for r in rs]
    if cli and "error" not in cli:
        for k in CLI_CALLS:
            rows.append({"size": f"{cli['width']}x{cli['height']}", "codec": "ours", "op": f"cli_{k}",
                         "runs": cli["runs"], "median_s": cli["median_s"][k], "min_s": min(cli["wall_s"][k]),
                         "max_s": max(cli["wall_s"][k]), "times": ";".join(f"{t:.4f}" for t in cli["wall_s"][k]),
                         "cpu_median_s": cli["cpu_median_s"][k], "error": ""})
    elif cli:
        rows.append({"size": "-", "codec": "ours", "op": "cli_decode_sh", "error": cli["error"]})
    extra = sorted({k for r in rows for k in r} - set(CSV_FIELDS))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS + extra, restval="")
        w.writeheader()
        w.writerows(rows)


@dataclass
class ReportData:
    """What the section writers read: the run's arguments and every result, keyed (size, codec, op)."""

    args: argparse.Namespace
    results: dict
    startup: dict
    anchors: list[str]
    cli: dict | None = None
    v3: dict | None = None

    @property
    def sizes(self) -> list[str]:
        return sorted({k[0] for k in self.results}, key=lambda s: [int(v) for v in s.split("x")][0] * 100000 +
                      int(s.split("x")[1]))

    def get(self, size: str, codec: str, op: str) -> dict | None:
        return self.results.get((size, codec, op))

    @property
    def anchor_header(self) -> list[str]:
        return [x for a in self.anchors for x in (a, f"ours/{a}")]


def _bytes_per_px(r: dict) -> str:
    return fs((r["peak_rss_mb"] - r["rss_ready_mb"]) * MIB / (r["width"] * r["height"]), 1)
