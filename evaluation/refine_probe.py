"""Does per-image latent refinement pay on these models? A measurement, not an encoder mode.

    python -m evaluation.refine_probe [--model t075] [--images kodim01] [--iters 20]
                                      [--lambdas 50,200] [--lr 0.005]

For each image it prints the model's own rate-distortion curve over the Δ codes
112..144 (real coded bytes, decoder's reconstruction), then refines y for Δ = 1
with z (so mu and sigma) fixed: Adam on y in quantiser-step units, straight-through
rounding, loss = MSE(0..255) + λ · (Gaussian bits per pixel). Compare each refined
point with the curve at the same bpp. Written for models/README.md, session 5.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from evaluation.datasets import KODAK
from evaluation.metrics import psnr


def refine(analysed, rgb: np.ndarray, lam: float, iters: int, lr: float) -> np.ndarray:
    """Refined y for Δ = 1 (same shape as analysed.y), rounded onto the quantiser grid."""
    import tensorflow as tf

    from models import scale_table as S
    h, w = rgb.shape[:2]
    mu = analysed.mu_q.astype(np.float32) / (1 << S.Q)
    sigma = np.exp2(np.maximum(analysed.log2_sigma_q, S.LOG2_MIN_Q).astype(np.float32) / (1 << S.Q))
    yh, yw = analysed.y.shape[:2]
    x = np.pad(rgb, ((0, yh * 16 - h), (0, yw * 16 - w), (0, 0)), mode="edge")[None].astype(np.float32)
    mask = np.zeros(x.shape, np.float32)
    mask[:, :h, :w] = 1
    x, mask, mu_t, sig_t = (tf.constant(v) for v in (x, mask, mu[None], sigma[None]))
    u = tf.Variable((analysed.y - mu)[None])
    opt = tf.keras.optimizers.Adam(lr)
    synthesis = analysed.model.dec.synthesis

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            r = u + tf.stop_gradient(tf.round(u) - u)
            mse = tf.reduce_sum(mask * tf.square(synthesis(mu_t + r) * 255.0 - x)) / (3.0 * h * w)
            cdf = lambda v: 0.5 * (1.0 + tf.math.erf(v / sig_t / math.sqrt(2.0)))
            bits = -tf.reduce_sum(tf.math.log(tf.maximum(cdf(r + 0.5) - cdf(r - 0.5), 1e-9))) / math.log(2.0)
            loss = mse + lam * bits / (h * w)
        opt.apply_gradients(zip(tape.gradient(loss, [u]), [u]))

    for _ in range(iters):
        step()
    return (mu + np.round(u.numpy()[0])).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.refine_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="t075", help="registry model name")
    p.add_argument("--images", default="kodim01", help="comma-separated Kodak stems")
    p.add_argument("--kodak", default=str(KODAK), help="folder of the Kodak PNGs")
    p.add_argument("--iters", type=int, default=20, help="Adam steps per refinement")
    p.add_argument("--lambdas", default="50,200", help="comma-separated rate weights (MSE per bpp)")
    p.add_argument("--lr", type=float, default=0.005, help="Adam step size, in quantiser steps")
    args = p.parse_args(argv)

    from models.runtime import configure
    configure()
    from encoder.encode import EncoderModels
    from encoder.imageio import load_rgb8
    from models.scale_table import DELTA_CODE_UNITY
    models = EncoderModels()
    entry = next((e for e in models.registry.entries if e.name == args.model), None)
    if entry is None:
        print(f"refine_probe: no model {args.model!r} in the registry", file=sys.stderr)
        return 2
    em = models.encoder_model(entry)
    for stem in args.images.split(","):
        rgb = load_rgb8(Path(args.kodak) / f"{stem}.png")
        px = rgb.shape[0] * rgb.shape[1]
        a = em.analyse(rgb)
        curve = [(8 * len(a.code(c, 0)) / px, psnr(rgb, a.reconstruct(c)), c) for c in range(112, 145, 4)]
        print(stem, "curve (bpp, PSNR-RGB, delta code):", ", ".join(f"({b:.4f}, {q:.2f}, {c})" for b, q, c in curve))
        y0 = a.y
        for lam in (float(v) for v in args.lambdas.split(",")):
            t0 = time.time()
            a.y = refine(a, rgb, lam, args.iters, args.lr)
            b, q = 8 * len(a.code(DELTA_CODE_UNITY, 0)) / px, psnr(rgb, a.reconstruct(DELTA_CODE_UNITY))
            bs, qs = zip(*sorted((c[0], c[1]) for c in curve))
            print(f"{stem} lambda {lam:g}: refined {b:.4f} bpp {q:.2f} dB; curve at that bpp "
                  f"{np.interp(b, bs, qs):.2f} dB; {time.time() - t0:.1f} s", flush=True)
            a.y = y0
    return 0


if __name__ == "__main__":
    sys.exit(main())
