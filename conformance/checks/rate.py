"""Check 1, rate: every stream's size on disk is within +-15 % of its target.

bpp = 8 * file size / (W * H), measured with os.stat on the written file, never
taken from the encoder's own report: a stream that was padded, truncated or
replaced after encoding is judged by what is on disk. A pair the encoder
cannot reach fails unless it is declared in an exclusions file, and every
excluded pair is listed in the report with its achievable range.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conformance.report import CheckResult, Table
from models.targets import TOLERANCE

EPS = 1e-12   # same slack as rate_control.search: float round-off only


class ExclusionsError(ValueError):
    """The exclusions file cannot be read; one line for the user."""


@dataclass(frozen=True)
class Exclusion:
    image: str                 # file name or stem
    target: float | None       # None: every target
    reason: str
    source: str                # file:line, for the report

    def matches(self, image: str, target: float) -> bool:
        return self.image in (image, Path(image).stem) and (self.target is None or abs(self.target - target) < 1e-9)


def _target(text: str, where: str) -> float | None:
    t = str(text).strip()
    if t.lower() in ("all", "*"):
        return None
    from models.targets import parse_target  # one definition of a valid target
    try:
        return parse_target(t)
    except ValueError as e:
        raise ExclusionsError(f"{where}: {e} (or 'all')") from None


def load_exclusions(path: str | os.PathLike | None) -> list[Exclusion]:
    """YAML (`exclusions: [{image, target, reason}]`) or CSV (header `image,target[,reason]`)."""
    if path is None:
        return []
    p = Path(path)
    if not p.is_file():
        raise ExclusionsError(f"{path}: exclusions file not found")
    text = p.read_text()
    out: list[Exclusion] = []
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ExclusionsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        items = doc.get("exclusions", []) if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise ExclusionsError(f"{path}: expected a list under 'exclusions'")
        for i, it in enumerate(items):
            where = f"{p.name}: entry {i + 1}"
            if not isinstance(it, dict) or "image" not in it or "target" not in it:
                raise ExclusionsError(f"{where}: needs 'image' and 'target'")
            out.append(Exclusion(str(it["image"]), _target(it["target"], where), str(it.get("reason", "")), where))
    else:
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        rows = list(csv.reader(lines))
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["image", "target"]:
            rows = rows[1:]
        for i, r in enumerate(rows):
            where = f"{p.name}: row {i + 1}"
            if len(r) < 2:
                raise ExclusionsError(f"{where}: needs image,target[,reason]")
            out.append(Exclusion(r[0].strip(), _target(r[1], where), ",".join(r[2:]).strip(), where))
    return out


def measure(path: str | os.PathLike, width: int, height: int) -> tuple[int, float]:
    """(bytes on disk, bpp): the challenge's measure."""
    size = os.stat(path).st_size
    return size, 8.0 * size / (width * height)


def in_band(bpp: float, target: float) -> bool:
    return abs(bpp / target - 1.0) <= TOLERANCE + EPS


def evaluate(streams: Iterable, targets: list[float], exclusions: list[Exclusion]) -> CheckResult:
    """Judge every (image, target) pair from the files on disk; pure, so tests can fake the files."""
    r = CheckResult("rate", True, "")
    pairs, used = [], set()
    for s in streams:
        row = {"image": s.image, "target": s.target, "status": s.status, "bytes": None, "bpp": None,
               "deviation_pct": None, "within_band": False, "excluded": False}
        pairs.append(row)
        ex = next((e for e in exclusions if e.matches(s.image, s.target)), None)
        if s.status == "error" or s.path is None or not Path(s.path).is_file():
            r.fail(f"not encoded: {s.error or 'no stream file'}", image=s.image, target=s.target)
            continue
        size, bpp = measure(s.path, s.width, s.height)
        dev = bpp / s.target - 1.0
        row.update(bytes=size, bpp=bpp, deviation_pct=100 * dev, within_band=in_band(bpp, s.target))
        if not math.isnan(s.encoder_bpp) and abs(bpp - s.encoder_bpp) > 1e-9:
            r.fail(f"file on disk is {bpp:.4f} bpp ({size} B) but the encoder produced {s.encoder_bpp:.4f} bpp",
                   image=s.image, target=s.target)
        if row["within_band"]:
            if ex is not None:
                used.add(ex)
                r.notes.append(f"{s.image} at {s.target:.2f}: declared exclusion ({ex.source}) not needed, "
                               f"stream is in band at {bpp:.4f} bpp")
            continue
        if s.status == "unreachable":
            rng = f"achievable {s.lo:.4f}-{s.hi:.4f} bpp" if s.lo is not None else "achievable range unknown"
            if ex is not None:
                used.add(ex)
                row["excluded"] = True
                r.figures.setdefault("excluded_pairs", []).append(
                    {"image": s.image, "target": s.target, "bpp": bpp, "lo": s.lo, "hi": s.hi, "reason": ex.reason,
                     "declared": ex.source})
                continue
            r.fail(f"unreachable ({rng}); closest stream {bpp:.4f} bpp ({100 * dev:+.1f} %); "
                   "not declared in an exclusions file", image=s.image, target=s.target)
        else:
            r.fail(f"{bpp:.4f} bpp is {100 * dev:+.1f} % from the target (band +-{100 * TOLERANCE:.0f} %)",
                   image=s.image, target=s.target)
    for e in exclusions:
        if e not in used:
            r.notes.append(f"declared exclusion {e.image} at {'all targets' if e.target is None else f'{e.target:.2f}'}"
                           f" ({e.source}) matched no out-of-band pair")
    rows = []
    for t in targets:
        g = [p for p in pairs if abs(p["target"] - t) < 1e-9 and p["bpp"] is not None]
        bpps = [p["bpp"] for p in g]
        devs = [p["deviation_pct"] for p in g]
        n_all = sum(1 for p in pairs if abs(p["target"] - t) < 1e-9)
        rows.append([f"{t:.2f}", f"{sum(p['within_band'] for p in g)}/{n_all}",
                     f"{np.mean(bpps):.4f}" if bpps else "-",
                     f"{np.var(bpps, ddof=1):.3g}" if len(bpps) > 1 else "-",
                     f"{min(devs):+.2f}" if devs else "-", f"{max(devs):+.2f}" if devs else "-",
                     sum(p["excluded"] for p in g)])
    r.tables.append(Table("Per target (bpp = 8 x file bytes / (W x H); band +-15 %; var is ddof=1)",
                          ["target", "within band", "mean bpp", "var bpp", "min dev %", "max dev %", "excluded"], rows))
    ex_rows = [[e["image"], f"{e['target']:.2f}", f"{e['bpp']:.4f}",
                f"{e['lo']:.4f}-{e['hi']:.4f}" if e["lo"] is not None else "-", e["reason"] or "-", e["declared"]]
               for e in r.figures.get("excluded_pairs", [])]
    if ex_rows:
        r.tables.append(Table("Declared exclusions (unreachable pairs, accepted)",
                              ["image", "target", "closest bpp", "achievable", "reason", "declared in"], ex_rows))
    n_in = sum(p["within_band"] for p in pairs)
    r.figures.update(pairs_total=len(pairs), within_band=n_in, excluded=len(ex_rows), pairs=pairs)
    r.summary = (f"{n_in}/{len(pairs)} streams within +-15 % on disk, {len(ex_rows)} declared exclusion(s), "
                 f"{len(r.failures)} failure(s)")
    return r


def check(ctx) -> CheckResult:
    return evaluate(ctx.streams, ctx.opts.targets, load_exclusions(ctx.opts.exclusions))
