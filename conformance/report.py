"""Check results and the two report files (report.json for tools, report.md for people).

Every check returns one CheckResult. A failure always names what failed and,
where it applies, the image and target (or the robustness case) so that it can
be reproduced without re-reading logs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance.common import json_safe


@dataclass
class Failure:
    """One offending item; `what` is a single line."""

    what: str
    image: str | None = None
    target: float | None = None
    stream: str | None = None
    case: str | None = None
    version: int | None = None          # bitstream version of the stream, where one is concerned

    def where(self) -> str:
        parts = []
        if self.image is not None:
            parts.append(self.image)
        if self.target is not None:
            parts.append(f"{self.target:.2f} bpp")
        if self.stream is not None and self.image is None:
            parts.append(self.stream)
        if self.version is not None:
            parts.append(f"bitstream v{self.version}")
        if self.case is not None:
            parts.append(f"case {self.case}")
        return ", ".join(parts) or "-"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class CheckResult:
    name: str
    passed: bool
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, what: str, **where: Any) -> None:
        self.failures.append(Failure(what, **where))
        self.passed = False


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(t: Table) -> str:
    lines = [f"**{t.title}**", "", "| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


MAX_MD_FAILURES = 50


def rate_plot(results: list[CheckResult], path: Path) -> Path | None:
    """Every stream's deviation from its target against the +-15 % band: the rate check at a glance."""
    rate = next((r for r in results if r.name == "rate"), None)
    pairs = [p for p in (rate.figures.get("pairs", []) if rate else []) if p.get("bpp") is not None]
    if not pairs:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from models.targets import TOLERANCE
    targets = sorted({p["target"] for p in pairs})
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.axhspan(-100 * TOLERANCE, 100 * TOLERANCE, color="tab:green", alpha=0.12, label="±15 % band")
    for i, t in enumerate(targets):
        g = [p for p in pairs if p["target"] == t]
        jitter = np.linspace(-0.25, 0.25, len(g)) if len(g) > 1 else np.zeros(1)
        ok = np.array([p["within_band"] or p["excluded"] for p in g])
        dev = np.array([p["deviation_pct"] for p in g])
        ax.scatter(i + jitter[ok], dev[ok], s=10, color="tab:blue")
        ax.scatter(i + jitter[~ok], dev[~ok], s=18, color="tab:red", marker="x")
    lim = max(20.0, 1.1 * max(abs(p["deviation_pct"]) for p in pairs))
    ax.set_ylim(-lim, lim)
    ax.set_xlim(-0.6, len(targets) - 0.4)
    ax.set_xticks(range(len(targets)), [f"{t:.2f}" for t in targets])
    ax.set_xlabel("target (bpp)")
    ax.set_ylabel("file bpp vs target (%)")
    ax.set_title(f"rate: {rate.figures.get('within_band', 0)}/{len(rate.figures.get('pairs', []))} streams in band")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_md(meta: dict[str, Any], results: list[CheckResult], plots: dict[str, str] | None = None) -> str:
    ok = all(r.passed for r in results) and bool(results)
    out = [f"# ratelock conformance: {'PASS' if ok else 'FAIL'}", ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, (dict, list))]
    out += ["", "| check | result | summary | seconds |", "|---|---|---|---|"]
    out += [f"| {r.name} | {'PASS' if r.passed else 'FAIL'} | {_cell(r.summary)} | {r.seconds:.1f} |" for r in results]
    for r in results:
        out += ["", f"## {r.name}: {'PASS' if r.passed else 'FAIL'}", "", r.summary, ""]
        if r.figures:
            out += [f"- {k}: {_cell(v)}" for k, v in r.figures.items() if not isinstance(v, (dict, list))]
            out.append("")
        for t in r.tables:
            out += [md_table(t), ""]
        if plots and r.name in plots:
            out += [f"![{r.name}]({plots[r.name]})", ""]
        if r.failures:
            out += [f"**Failures ({len(r.failures)})**", "", "| where | what |", "|---|---|"]
            out += [f"| {_cell(f.where())} | {_cell(f.what)} |" for f in r.failures[:MAX_MD_FAILURES]]
            if len(r.failures) > MAX_MD_FAILURES:
                out.append(f"| ... | {len(r.failures) - MAX_MD_FAILURES} more in report.json |")
            out.append("")
        if r.notes:
            out += ["**Notes**", ""] + [f"- {n}" for n in r.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


def write(report_dir: str | os.PathLike, meta: dict[str, Any], results: list[CheckResult]) -> tuple[Path, Path]:
    """Write report.json and report.md atomically; returns their paths."""
    d = Path(report_dir)
    d.mkdir(parents=True, exist_ok=True)
    ok = all(r.passed for r in results) and bool(results)
    doc = {"passed": ok, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta,
           "checks": [asdict(r) for r in results]}
    pj, pm = d / "report.json", d / "report.md"
    plot = rate_plot(results, d / "rate.png")
    plots = {"rate": plot.name} if plot else {}
    for path, text in ((pj, json.dumps(json_safe(doc), indent=1, allow_nan=False)),
                       (pm, render_md(meta, results, plots))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return pj, pm
