"""The encoder's batch mode: a folder of images at several targets, resumable and shardable.

Each stream has a record, OUTDIR/.rates/<stream>.json (its rates.csv row, the stream's hash and what
it was made from: source hash, models, aim, refinement). A re-run keeps a stream whose record says it was
made from the same source with the same settings and whose file still has that hash; everything else is
encoded again. rates.csv is rebuilt from all records in OUTDIR, atomically and under a lock, at the end
(also after SIGTERM), so it always lists exactly the streams the folder holds, however many runs, shards
or concurrent batches wrote them. A bad image is one line and the rest go on (models/batch.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

RECORDS = ".rates"
FIELDS = ("image", "target", "bpp", "deviation_pct", "within_band", "status", "written", "stream", "bytes", "model",
          "delta_code", "analyses", "probes", "refine_db", "seconds")


def sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("row"), dict) else None


def _kept(out: Path, name: str, key: dict[str, Any], best_effort: bool) -> dict[str, Any] | None:
    """The row of a stream a re-run can keep: same key, and the file (if one was written) still the one made."""
    rec = _read_record(out / RECORDS / (name[:-len(".bit")] + ".json"))
    if rec is None or rec.get("key") != key:
        return None
    row = rec["row"]
    if not int(row.get("written", 0)):
        return None if best_effort else row        # --best-effort now: the closest stream is wanted after all
    try:
        data = (out / name).read_bytes()
    except OSError:
        return None
    return row if sha16(data) == rec.get("sha256_16") else None


def rebuild_rates(out: Path) -> Path:
    """rates.csv from every record in out whose stream (if any) is there, sorted by image and target."""
    import fcntl

    from models.pngio import write_bytes_atomic
    rec_dir = out / RECORDS
    rec_dir.mkdir(exist_ok=True)
    with open(rec_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # scan and write in one piece: the last writer saw the most
        rows = []
        for p in sorted(rec_dir.glob("*.json")):
            rec = _read_record(p)
            if rec is not None and (not int(rec["row"].get("written", 0)) or (out / rec["row"]["stream"]).is_file()):
                rows.append(rec["row"])
        rows.sort(key=lambda r: (str(r["image"]), float(r["target"])))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(FIELDS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_bytes_atomic(out / "rates.csv", buf.getvalue().encode())
    return out / "rates.csv"


def run(args, encoder, images: list[Path], out: Path, prog: str, targets: list[float]) -> int:
    """Encode every image of this run (this shard's) at every target; 0 all in band, 2 some outside, 1 a failure."""
    from encoder.imageio import InputError, load_rgb8
    from models.batch import Batch, Stopped, stop_on_sigterm
    from models.pngio import remove_stale_temps, write_bytes_atomic
    from models.targets import rate_code
    from rate_control.search import Unreachable, search
    (out / RECORDS).mkdir(exist_ok=True)
    for d in (out, out / RECORDS):
        remove_stale_temps(d)
    models = [e.hash for e in encoder.models.registry.entries]
    settings = {"aim": args.aim, "refine": args.refine, "flatten_alpha": bool(args.flatten_alpha), "models": models}
    rows: dict[str, dict[str, Any]] = {}
    batch = Batch(prog, len(images), "images", desc="encoding", units=len(images) * len(targets))

    def work(img: Path) -> bool:
        source = sha16(img.read_bytes())
        rgb, encoded = None, False
        for t in targets:
            name = f"{img.stem}_{rate_code(t)}.bit"
            key = {**settings, "source_sha256_16": source, "target": t}
            row = None if args.force else _kept(out, name, key, args.best_effort)
            if row is not None:
                rows[name] = row
                continue
            if rgb is None:
                try:
                    rgb = load_rgb8(img, args.flatten_alpha)
                except InputError as e:     # the batch line names the image already
                    raise InputError(str(e).removeprefix(f"{img}: ")) from None
            rows[name] = _encode(args, encoder, rgb, img, t, name, out, key, search, Unreachable, write_bytes_atomic)
            encoded = True
        return encoded
    try:
        with stop_on_sigterm():
            batch.run(images, lambda p: p.name, work, weight=len(targets))
    except Stopped:
        rebuild_rates(out)
        return batch.stopped()
    rates = rebuild_rates(out)
    misses = sum(not int(r["within_band"]) for r in rows.values())
    print(f"{len(rows) - misses} of {len(rows)} streams within +-15 %"
          + (f" ({batch.kept} of {len(images)} images kept from an earlier run)" if batch.kept else "")
          + f"; rates in {rates}")
    status = batch.finish()
    return status or (2 if misses else 0)


def _encode(args, encoder, rgb, img: Path, t: float, name: str, out: Path, key: dict[str, Any], search, Unreachable,
            write) -> dict[str, Any]:
    """One stream and its record (the stream first: a record never names a stream that is not there)."""
    t0 = time.perf_counter()
    status = "ok"
    try:
        c = search(rgb, t, encoder.models, args.aim, refine=args.refine)
    except Unreachable as e:
        c, status = e.best, "unreachable"
    written = status == "ok" or args.best_effort
    if written:
        write(out / name, c.data)
    row = {"image": img.name, "target": f"{t:.2f}", "bpp": f"{c.bpp:.5f}", "deviation_pct": f"{c.deviation * 100:+.2f}",
           "within_band": int(c.within_band), "status": status, "written": int(written), "stream": name if written else "",
           "bytes": len(c.data), "model": c.model, "delta_code": c.delta_code, "analyses": c.analyses,
           "probes": c.probes, "refine_db": f"{c.refinement.gain_db:.3f}" if c.refinement else "",
           "seconds": f"{time.perf_counter() - t0:.3f}"}
    record = {"row": row, "key": key, "sha256_16": sha16(c.data) if written else None}
    write(out / RECORDS / (name[:-len(".bit")] + ".json"), json.dumps(record, indent=1).encode())
    return row
