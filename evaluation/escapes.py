"""What bitstream v1's clamping would cost on the streams v2 writes (v2 escapes out-of-range latents).

    python -m evaluation.escapes [--kodak ../shared/data/kodak] [--targets all] [--limit N]

For each image and target it runs the real rate search, then rebuilds the chosen
stream's reconstruction as v1 would have: z and y symbols clamped to their CDF
rows' ranges (same model, same Δ). It prints the escape fraction and the PSNR-RGB
of both per target. Written for decoder/BITSTREAM.md's "Escapes" figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from evaluation.datasets import KODAK
from models.cli import ArgumentParser, one_line_errors

ROOT = Path(__file__).resolve().parent.parent

PROG = "python -m evaluation.escapes"


def _row_clip(table, symbols: np.ndarray, idx: np.ndarray) -> np.ndarray:
    lo = table.offset[idx]
    return np.clip(symbols, lo, lo + table.length[idx] - 1)


def v1_reconstruction(em, rgb: np.ndarray, code: int) -> tuple[np.ndarray, float]:
    """(v1 reconstruction, fraction of y symbols v2 escapes) for one model and Δ code."""
    from models import scale_table as S
    from models.intnet import Z_MAX
    from models.synthesis import synthesize, to_uint8
    y = em.transform(rgb)
    z = em._h_a(y[None])[0].numpy()
    z_idx = np.broadcast_to(np.arange(z.shape[-1], dtype=np.int32), z.shape)
    z_hat = _row_clip(em.dec.z_table, np.clip(np.round(z), -Z_MAX, Z_MAX), z_idx)
    mu_q, log2_sigma_q = em.dec.intnet.run(z_hat)
    s = np.round((y - mu_q.astype(np.float32) / np.float32(1 << S.Q)) / np.float32(S.delta(code)))
    idx = S.scale_index(log2_sigma_q, code)
    clipped = _row_clip(em.dec.y_table, s, idx)
    escaped = float(np.mean(em.dec.y_table.escaped(s, idx)))
    rec = to_uint8(synthesize(em.dec.synthesis, S.dequantize(clipped, mu_q, code)), rgb.shape[1], rgb.shape[0])
    return rec, escaped


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = ArgumentParser(prog="python -m evaluation.escapes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kodak", default=str(KODAK), help="folder of PNGs")
    p.add_argument("--targets", default="all", help="'all' or comma-separated bpp values")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    p.add_argument("--registry", default=None, help="model registry YAML (default: the shipped one)")
    args = p.parse_args(argv)
    from tqdm import tqdm

    from decoder.decode import decode_bytes
    from encoder.encode import EncoderModels
    from encoder.imageio import load_rgb8
    from evaluation.metrics import psnr_rgb
    from models.runtime import configure
    from models.targets import TARGETS
    from rate_control.search import search
    configure()
    targets = list(TARGETS) if args.targets == "all" else [float(t) for t in args.targets.split(",")]
    images = sorted(Path(args.kodak).glob("*.png"))[:args.limit or None]
    models = EncoderModels(args.registry)
    rows = {t: [] for t in targets}
    for f, t in tqdm([(f, t) for f in images for t in targets], desc="escapes", unit="enc", file=sys.stderr):
        rgb = load_rgb8(f)
        c = search(rgb, t, models)
        em = models.encoder_model(next(e for e in models.distinct_entries() if e.name == c.model))
        v1, frac = v1_reconstruction(em, rgb, c.delta_code)
        rows[t].append((f.stem, c.model, frac, psnr_rgb(rgb, decode_bytes(c.data, models)), psnr_rgb(rgb, v1)))
    print("| target | models | y symbols escaped | PSNR-RGB v2 | PSNR-RGB v1 (clamped) | worst v1 loss |")
    print("|---|---|---|---|---|---|")
    for t, r in rows.items():
        loss = [a - b for *_, a, b in r]
        worst = r[int(np.argmax(loss))]
        print(f"| {t:.2f} | {', '.join(sorted({m for _, m, *_ in r}))} | {100 * np.mean([x[2] for x in r]):.3f} % "
              f"| {np.mean([x[3] for x in r]):.2f} | {np.mean([x[4] for x in r]):.2f} "
              f"| {max(loss):.2f} dB ({worst[0]}) |")
    print(f"{len(images)} images; v1 = same model and Δ with latents clamped to their CDF rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
