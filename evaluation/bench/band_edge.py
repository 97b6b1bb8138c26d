"""The band's lower edge: where a refined stream that saved bits is re-fitted, and what that is worth.

    python -m evaluation.bench.band_edge ../shared/data/kodak --targets 0.06,0.12,0.25,0.5 --floor 0.12

Latent refinement can save more bits than the band allows; the rate search then re-fits a refined stream
that lands below target * (1 - floor) to the finest delta code under the ceiling (rate_control/search.py,
DEFAULT_FLOOR = the band's 15 %). A floor of 12 % would re-fit more streams, spending their saved bits on
quality instead of handing out a stream at -14 %. Each image and target is encoded once, with the
shipped encoder (rate search, 100 refinement steps); the one refinement is then settled under both
floors, so the two arms differ only where the floor decides. Both streams are decoded and scored.

Prints, per target, how many streams the floor changed and the mean bpp, PSNR-RGB and MS-SSIM-Y (dB) of
each arm; then the BD-rate against JPEG 2000 of each arm's curve, using `--results` (a committed Kodak
run: its JPEG 2000 curve, and its per-image points of ours where this run has none, the same in both
arms). Writes the
per-stream rows as JSON to --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from models.cli import ArgumentParser, one_line_errors

PROG = "python -m evaluation.bench.band_edge"
ROOT = Path(__file__).resolve().parents[2]


def _both_floors(alt: float, record: list):
    """A _Probe.refine that settles one refinement under the search's floor and under `alt`; returns the
    search's, records (alt choice, search's choice). The refined latents are computed once (memoised)."""
    from rate_control.search import _Probe
    orig = _Probe.refine

    def refine(self, c, iters, ceiling, aim, floor):
        k = self.index(c)
        saved, coded = self.analysed[k], dict(self.coded)
        real, memo = saved.refined, {}

        def once(*a, **kw):
            if "r" not in memo:
                memo["r"] = real(*a, **kw)
            return memo["r"]
        saved.refined = once
        try:
            other = orig(self, c, iters, ceiling, aim, alt)
            self.analysed[k], self.coded = saved, coded
            ours = orig(self, c, iters, ceiling, aim, floor)
        finally:
            del saved.refined
        record.append((other, ours))
        return ours
    return refine


def run(points: list[tuple[Path, float]], floor: float, iters: int = 100) -> list[dict]:
    from unittest import mock

    from decoder.decode import ModelCache, decode_bytes
    from encoder.api import Encoder
    from encoder.imageio import load_rgb8
    from evaluation.metrics import ms_ssim_y, psnr_rgb, to_db
    from rate_control import search as S
    enc = Encoder(None, refine=iters)
    dec = ModelCache()
    rows = []
    for path, t in points:
        rgb = load_rgb8(path)
        record: list = []
        with mock.patch.object(S._Probe, "refine", _both_floors(floor, record)):
            S.search(rgb, t, enc.models, enc.aim, refine=iters)
        if not record:                      # nothing in the band to refine
            continue
        other, ours = record[-1]
        row = {"image": path.stem, "target": t, "changed": other.data != ours.data}
        for arm, c in (("band", ours), ("floor", other)):
            img = decode_bytes(c.data, dec)
            row[arm] = {"bpp": c.bpp, "psnr_rgb": psnr_rgb(rgb, img), "msssim_y_db": to_db(ms_ssim_y(rgb, img)),
                        "within_band": c.within_band}
        rows.append(row)
        b, f = row["band"], row["floor"]
        print(f"{path.stem} {t:.2f}  {'changed' if row['changed'] else 'same   '}  band {b['bpp']:.4f} bpp "
              f"{b['psnr_rgb']:.3f} dB  floor {f['bpp']:.4f} bpp {f['psnr_rgb']:.3f} dB", flush=True)
    return rows


def _committed(results: Path) -> tuple[dict[float, dict], dict[tuple[str, float], dict]]:
    """The committed run's JPEG 2000 curve (per-target means) and our per-image points."""
    from evaluation.metrics import to_db
    anchor, ours = {}, {}
    with (results / "summary.csv").open() as fh:
        for r in csv.DictReader(fh):
            if r["codec"] == "jpeg2000":
                anchor[float(r["target"])] = {"bpp": float(r["mean_bpp"]), "psnr_rgb": float(r["mean_psnr_rgb"]),
                                              "msssim_y_db": float(r["mean_msssim_y_db"])}
    with (results / "per_image.csv").open() as fh:
        for r in csv.DictReader(fh):
            if r["codec"] == "ours":
                ours[r["image"], float(r["target"])] = {"bpp": float(r["bpp"]), "psnr_rgb": float(r["psnr_rgb"]),
                                                        "msssim_y_db": to_db(float(r["msssim_y"]))}
    return anchor, ours


def report(rows: list[dict], floor: float, results: Path | None) -> str:
    from evaluation.bd import bd_rate
    targets = sorted({r["target"] for r in rows})
    lines = [f"| target | streams changed | band: bpp, PSNR-RGB, MS-SSIM-Y dB | floor {floor:.0%}: bpp, PSNR-RGB, "
             "MS-SSIM-Y dB |", "|---|---|---|---|"]
    for t in targets:
        g = [r for r in rows if r["target"] == t]
        cells = []
        for arm in ("band", "floor"):
            m = {k: statistics.mean(r[arm][k] for r in g) for k in ("bpp", "psnr_rgb", "msssim_y_db")}
            cells.append(f"{m['bpp']:.4f}, {m['psnr_rgb']:.3f}, {m['msssim_y_db']:.3f}")
        lines.append(f"| {t:.2f} | {sum(r['changed'] for r in g)} of {len(g)} | {cells[0]} | {cells[1]} |")
    lines.append(f"\nin band: {sum(r['band']['within_band'] for r in rows)} and "
                 f"{sum(r['floor']['within_band'] for r in rows)} of {len(rows)}")
    if results is not None and (results / "per_image.csv").is_file():
        anchor, committed = _committed(results)
        ts = sorted(anchor)
        for key, label in (("psnr_rgb", "PSNR-RGB"), ("msssim_y_db", "MS-SSIM-Y")):
            bd = {}
            for arm in ("band", "floor"):
                # Each measured stream replaces the committed run's point for its image and target;
                # the others are the same in both arms.
                pts = dict(committed)
                pts.update({(r["image"], r["target"]): r[arm] for r in rows})
                mean = {t: {k: statistics.mean(v[k] for (_, tt), v in pts.items() if tt == t)
                            for k in ("bpp", key)} for t in ts}
                bd[arm] = bd_rate([anchor[t]["bpp"] for t in ts], [anchor[t][key] for t in ts],
                                  [mean[t]["bpp"] for t in ts], [mean[t][key] for t in ts], "pchip").value
            lines.append(f"BD-rate {label} vs JPEG 2000: band {bd['band']:+.2f} %, floor {bd['floor']:+.2f} %, "
                         f"difference {bd['floor'] - bd['band']:+.2f} % (other streams and the anchor: {results})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images_dir", help="folder of PNG images (Kodak)")
    p.add_argument("--targets", default="0.06,0.12,0.25,0.5", help="comma list of target bpp")
    p.add_argument("--floor", type=float, default=0.12, help="the other arm's floor, a fraction below the target")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    p.add_argument("--below", type=float, default=None,
                   help="only the streams that --results has below target * (1 - BELOW): where the floor can act")
    p.add_argument("--results", default=str(ROOT / "evaluation" / "results" / "kodak"),
                   help="a Kodak run's folder (summary.csv) for the BD-rates")
    p.add_argument("--out", default=str(ROOT / "runs" / "band_edge.json"), help="per-stream rows (JSON)")
    args = p.parse_args(argv)

    def body() -> int:
        if not 0 < args.floor < 0.15:
            raise ValueError("--floor must be in (0, 0.15)")
        images = sorted(Path(args.images_dir).glob("*.png"))
        if not images:
            raise FileNotFoundError(f"no PNG images in {args.images_dir}")
        images = images[:args.limit] if args.limit else images
        points = [(i, float(t)) for i in images for t in args.targets.split(",")]
        if args.below is not None:
            _, committed = _committed(Path(args.results))
            points = [(i, t) for i, t in points if (i.stem, t) in committed
                      and committed[i.stem, t]["bpp"] < t * (1 - args.below)]
        rows = run(points, args.floor)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
        print(report(rows, args.floor, Path(args.results)))
        return 0
    return one_line_errors(PROG, body)


if __name__ == "__main__":
    raise SystemExit(main())
