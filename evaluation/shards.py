"""Sharded evaluation: `--shard K/N` runs evaluate share K of the images, `merge` joins them.

  python -m evaluation IMAGES --out runs/eval/shard0 --shard 0/3      # ... one per machine, K = 0, 1, 2
  python -m evaluation merge runs/eval/shard0 runs/eval/shard1 runs/eval/shard2 --out runs/eval/all

Every run (sharded or not) leaves OUTDIR/run.json: its rows, codecs, tools, settings, the notes it made
before the work and what each point said. `merge` checks that the shards are the N shares of one run
(same image set, targets, crop, anchor and codecs; every K once), puts rows, failures and per-point notes
back in the order one run makes them, and writes the report with evaluation/report.py: the same files,
the same tables, as one machine running the whole set. Only what measures time differs (encode and
decode seconds are the shards' own; the wall time is their sum) and the command line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
RUN_VERSION = 1
SAME = ("version", "all_images", "targets", "crop", "anchor", "codec_info", "tools", "images_dir", "pre_notes")


class MergeError(Exception):
    """Shards that do not make one run; one line for the user."""


def title(images_dir: str, n_images: int, crop: int | None) -> str:
    return f"{Path(images_dir).name}: {n_images} images" + (f", crop {crop}" if crop else "")


def small_images_note(rows: list[dict[str, Any]], notes: list[str]) -> None:
    """The note on images too small for 5-scale MS-SSIM, once, after the points' own notes."""
    small = [r["image"] for r in rows if min(r["width"], r["height"]) < 176] if rows else []
    if small and not any("MS-SSIM" in n for n in notes):
        notes.append(f"{len(set(small))} image(s) smaller than 176 px on a side: MS-SSIM n/a for them")


def _json_safe(x: Any) -> Any:
    from evaluation.runner import _json_safe as safe
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return safe(x)


def save_run(outdir: Path, doc: dict[str, Any]) -> None:
    """OUTDIR/run.json, written whole or not at all."""
    from models.pngio import write_bytes_atomic
    doc = {"version": RUN_VERSION, **doc}
    write_bytes_atomic(outdir / RUN_FILE, json.dumps(_json_safe(doc), indent=1, default=str).encode())


def load_run(folder: Path) -> dict[str, Any]:
    path = Path(folder) / RUN_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise MergeError(f"{path}: not found (is {folder} the --out of an evaluation run?)") from None
    except (OSError, ValueError) as e:
        raise MergeError(f"{path}: unreadable ({e})") from None
    if doc.get("version") != RUN_VERSION:
        raise MergeError(f"{path}: run file version {doc.get('version')}, this merge reads {RUN_VERSION}")
    return doc


def ordered_points(points: list[list[Any]], images: list[str], codecs: list[str],
                   targets: list[float]) -> list[list[Any]]:
    """Point records in the order one run makes them: image, then codec, then target (a warm-up, -1, first)."""
    def key(p: list[Any]) -> tuple:
        image, codec, target = p[0], p[1], float(p[2])
        return (images.index(image) if image in images else len(images), codecs.index(codec) if codec in codecs
                else len(codecs), -1 if target < 0 else targets.index(target) if target in targets else len(targets))
    return sorted(points, key=key)


def merge(dirs: list[Path], out: Path) -> dict[str, Any]:
    """The N shards' runs as one: returns what evaluation.report.write_all returned, plus the merged log."""
    from evaluation import report
    from evaluation.runner import _from_json
    runs = [load_run(d) for d in dirs]
    n = {tuple(r["shard"])[1] for r in runs}
    if len(n) != 1:
        given = ", ".join(f"{d}: {r['shard'][0]}/{r['shard'][1]}" for d, r in zip(dirs, runs))
        raise MergeError(f"shards of different N: {given}")
    n_shards = n.pop()
    ks = sorted(r["shard"][0] for r in runs)
    if ks != list(range(n_shards)):
        missing = sorted(set(range(n_shards)) - set(ks))
        dup = sorted({k for k in ks if ks.count(k) > 1})
        raise MergeError(f"need shards 0..{n_shards - 1} once each"
                         + (f"; missing {', '.join(f'{k}/{n_shards}' for k in missing)}" if missing else "")
                         + (f"; given twice {', '.join(f'{k}/{n_shards}' for k in dup)}" if dup else ""))
    first = runs[0]
    for d, r in zip(dirs[1:], runs[1:]):
        bad = [k for k in SAME if r.get(k) != first.get(k)]
        if bad:
            raise MergeError(f"{d} is not a shard of the same run as {dirs[0]}: {', '.join(bad)} differ")
    covered = sorted(im for r in runs for im in r["images"])
    if covered != sorted(first["all_images"]):
        raise MergeError("the shards' images are not the run's image set, each once")
    images, targets = first["all_images"], [float(t) for t in first["targets"]]
    codecs = list(first["codec_info"])
    rows = [_from_json(row) for r in runs for row in r["rows"]]
    points = ordered_points([p for r in runs for p in r["points"]], images, codecs, targets)
    notes = list(first["pre_notes"])
    for p in points:
        if p[3] == "note" and p[4] not in notes:     # a warm-up note is said once, as one run says it
            notes.append(p[4])
    failures = [p[4] for p in points if p[3] == "failure"]
    small_images_note(rows, notes)
    out.mkdir(parents=True, exist_ok=True)
    wall = sum(float(r["wall_s"]) for r in runs)
    command = "python -m evaluation merge " + " ".join(str(d) for d in dirs) + f" --out {out}"
    res = report.write_all(out, rows, first["codec_info"], anchor=first["anchor"],
                           title=title(first["images_dir"], len(images), first["crop"]), tools=first["tools"],
                           report_args=dict(images_dir=first["images_dir"], n_images=len(images), crop=first["crop"],
                                            targets=targets, failures=failures, notes=notes, wall_s=wall,
                                            command=command))
    save_run(out, {**{k: first[k] for k in SAME if k != "version"}, "shard": [0, 1], "images": images, "rows": rows,
                   "points": points, "wall_s": wall, "command": command, "merged_from": [str(d) for d in dirs]})
    return {**res, "failures": failures, "rows": len(rows), "wall_s": wall}


def main(argv: list[str]) -> int:
    """python -m evaluation merge DIR... --out OUTDIR"""
    from models.cli import ArgumentParser, one_line_errors
    p = ArgumentParser(prog="python -m evaluation merge",
                       description="Join the --out folders of `python -m evaluation --shard K/N` runs into one report.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="the shards' output folders (every K of one N once)")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="folder for the merged report")
    args = p.parse_args(argv)

    def body() -> int:
        try:
            res = merge([Path(d) for d in args.dirs], Path(args.out))
        except MergeError as e:
            print(f"evaluation merge: error: {e}", file=sys.stderr)
            return 2
        print(f"{len(args.dirs)} shards, {res['rows']} points, {len(res['failures'])} failed")
        print(res["bd_md"])
        for f in res["failures"]:
            print(f"evaluation: failed: {f}", file=sys.stderr)
        print(f"report: {Path(args.out) / 'report.md'}")
        return 1 if res["failures"] else 0
    return one_line_errors("evaluation merge", body)
