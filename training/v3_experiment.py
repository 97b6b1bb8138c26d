"""Bitstream v3 against v2 from the same start: the experiment behind the v3 figures (decoder/BITSTREAM.md).

`compare` trains v2 (the base alone) and v3 (the base + slice networks, training/charm.py) for the same
steps on the same crops and reports estimated Kodak curves; `coded` puts two saved parameter sets
through the real codec. Both report the BD-rate of v3 against v2 as the evaluation computes it.

python -m training.v3_experiment compare --train entropy --steps 800 --lr 1e-4 --lr-new 1e-3 --save runs/c/params.npz
python -m training.v3_experiment coded --v2 runs/c/params-v2.npz --v3 runs/c/params-v3.npz --out-dir runs/c/models
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from evaluation import bd as BD
from models import jax_transforms as J
from models import scale_table as S
from models.cli import ArgumentParser, one_line_errors
from training.charm import PREFIX, entropy, forward, with_slices

PROG = "python -m training.v3_experiment"


def bd_rate(r1, d1, r2, d2) -> float:
    """BD-rate (%) of curve 2 against curve 1 in PSNR, as the evaluation reports it (evaluation.bd, pchip)."""
    res = BD.bd_rate(r1, d1, r2, d2)
    if res.value != res.value:          # NaN: too few monotone points or no overlap
        raise ValueError(res.note)
    return res.value


def _curve(evaluate, params, images, codes) -> list[dict]:
    """Mean estimated bpp and PSNR-RGB over the images at each delta code."""
    out = []
    for code in codes:
        bpp, mse = [], []
        for img in images:
            r = evaluate(params, img[None].astype(np.float32) / 255.0, np.float32(S.delta(code)))
            bpp.append(float(r["bpp"]))
            mse.append(float(r["mse"]))
        psnr = [10 * np.log10(255.0 ** 2 / max(v, 1e-9)) for v in mse]
        out.append({"code": code, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    return out


def compare(args) -> dict:
    """Train v2 (the base alone) and v3 (the base + slice nets) for the same steps on the same crops; curves."""
    import jax
    import jax.numpy as jnp
    import optax

    from training import state
    from training.data import Pool, list_images, load_images, load_rgb, sample_crops, split_holdout
    from training.model import Loss
    base, meta = state.load(Path(args.state))
    lam = float(meta["config"]["lmbda"])
    files, _ = split_holdout(list_images(args.train_dir), 30)
    files = files[:args.train_limit or None]
    pool = tuple(jnp.asarray(a) for a in Pool.from_images(load_images(files, args.patch, 1, 768, progress=False)).arrays())
    kodak_dir = Path(args.kodak)
    kodak = sorted(p for p in kodak_dir.iterdir() if p.suffix == ".png")[:args.kodak_limit]
    images = [load_rgb(f) for f in kodak]
    loss = Loss("lambda", lam)
    models = {"v2": {k: np.asarray(v) for k, v in base.items()},
              "v3": with_slices(base, jax.random.PRNGKey(args.seed), args.num_slices, args.hidden, args.lrp)}
    evaluate = jax.jit(lambda p, x, d: {k: v for k, v in forward(p, x, delta=d).items() if k != "x_hat"})
    codes = [int(c) for c in args.codes.split(",")]
    result = {"train_mode": args.train, "steps": args.steps, "batch": args.batch, "patch": args.patch, "lr": args.lr,
              "lr_new": args.lr_new or args.lr, "lmbda": lam,
              "num_slices": args.num_slices, "hidden": args.hidden, "lrp": args.lrp,
              "kodak": [f.name for f in kodak], "base_step": meta["step"], "curves": {}, "train": {}}
    seed_key = jax.random.PRNGKey(args.seed)
    curve0 = None
    models = {k: v for k, v in models.items() if k in args.models.split(",")}
    for name, p0 in models.items():
        params = {k: jnp.asarray(v) for k, v in p0.items()}
        opt = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(eps=1e-7))
        opt_state = opt.init(params)

        def step_fn(params, opt_state, step):
            kc, kn = jax.random.split(jax.random.fold_in(seed_key, step))   # the same crops and noise for both
            x = sample_crops(pool, kc, args.batch, args.patch)
            if args.train == "entropy":       # g_a, g_s frozen: the objective is the rate of fixed latents
                y = jax.lax.stop_gradient(J.analysis(params, x))

                def rate(q):
                    by, bz, _ = entropy(q, y, kn)
                    v = (by + bz) / (x.shape[0] * x.shape[1] * x.shape[2])
                    return v, {"bpp": v, "mse": jnp.float32(0.0)}
                (value, out), g = jax.value_and_grad(rate, has_aux=True)(params)
                g = {k: (jnp.zeros_like(v) if k.startswith(("analysis/", "synthesis/")) else v) for k, v in g.items()}
            else:
                (value, out), g = jax.value_and_grad(lambda q: (lambda o: (loss(o, x, 1.0, 1.0), o))(
                    forward(q, x, kn)), has_aux=True)(params)
            up, opt_state = opt.update(g, opt_state, params)   # noqa: B023 - traced within this iteration
            lr_new = args.lr_new or args.lr           # the slice nets are new: they may learn faster than the base
            params = {k: params[k] - (lr_new if k.startswith(PREFIX) else args.lr) * up[k] for k in params}
            return params, opt_state, jnp.stack([value, out["bpp"], out["mse"]])

        step = jax.jit(step_fn, donate_argnums=(0, 1))
        # v3 starts as v2 exactly (zero last layers; tests/test_charm_train.py), so one start curve serves both
        curve0 = curve0 if curve0 is not None else _curve(evaluate, params, images, codes)
        t0, losses = time.time(), []
        for i in range(args.steps):
            params, opt_state, v = step(params, opt_state, jnp.int32(i))
            losses.append([float(a) for a in v])
            if (i + 1) % 25 == 0:
                print(f"{name} step {i + 1} loss {np.mean([l[0] for l in losses[-25:]]):.4f} "
                      f"({(time.time() - t0) / (i + 1):.2f} s/step)", flush=True)
        secs = time.time() - t0
        curve = _curve(evaluate, params, images, codes)
        result["curves"][name] = {"start": curve0, "end": curve}
        result["train"][name] = {"seconds": round(secs, 1), "loss_first25": float(np.mean([l[0] for l in losses[:25]])),
                                 "loss_last25": float(np.mean([l[0] for l in losses[-25:]]))}
        print(name, json.dumps(result["curves"][name]), flush=True)
        if args.save:
            np.savez_compressed(Path(args.save).with_name(f"{Path(args.save).stem}-{name}.npz"),
                                **{k: np.asarray(v) for k, v in params.items()})
    if len(result["curves"]) < 2:
        return result
    c2, c3 = result["curves"]["v2"]["end"], result["curves"]["v3"]["end"]
    try:
        result["bd_rate_v3_vs_v2_percent"] = bd_rate([c["bpp"] for c in c2], [c["psnr"] for c in c2],
                                                     [c["bpp"] for c in c3], [c["psnr"] for c in c3])
    except ValueError as e:
        result["bd_rate_v3_vs_v2_percent"] = str(e)
    return result


def _bd_or_note(c2, c3) -> float | str:
    try:
        return bd_rate(*zip(*c2), *zip(*c3))
    except ValueError as e:
        return str(e)


def coded(args) -> dict:
    """v2 vs v3 through the real codec: export both parameter sets, encode Kodak at each delta code, decode.

    bpp is 8 * stream bytes / pixels; PSNR-RGB of the decoded image; decode seconds (wall, CPU) at code 128
    are the best of 3 per image, median over images.
    """
    from decoder.decode import ModelCache, decode_bytes
    from encoder.encode import EncoderModels
    from encoder.imageio import load_rgb8
    from evaluation.metrics import psnr_from_mse
    from models.runtime import configure
    from training.export import export, export_v3, register
    configure()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export(dict(np.load(args.v2)), "cmp_v2", {"trained": True}, out)
    export_v3(dict(np.load(args.v3)), "cmp_v3", {"trained": True}, out)
    reg = out / "registry.yaml"
    register(reg, out / "cmp_v2", "cmp_v2", [0.5], True)
    register(reg, out / "cmp_v3", "cmp_v3", [0.25], True)
    models, cache = EncoderModels(str(reg)), ModelCache(str(reg))
    codes = [int(c) for c in args.codes.split(",")]
    kodak = sorted(Path(args.kodak).glob("*.png"))[:args.kodak_limit]
    points: dict = {"v2": {c: [] for c in codes}, "v3": {c: [] for c in codes}}
    times: dict = {"v2": [], "v3": []}
    for f in kodak:
        rgb = load_rgb8(f)
        for name, ti in (("v2", 3), ("v3", 2)):
            a = models.encoder_model(models.registry.by_target(ti)).analyse(rgb)
            for c in codes:
                data = a.code(c, ti)
                img = decode_bytes(data, cache)
                if c == 128:
                    best = (1e9, 1e9)
                    for _ in range(3):
                        t0, c0 = time.time(), time.process_time()
                        decode_bytes(data, cache)
                        best = (min(best[0], time.time() - t0), min(best[1], time.process_time() - c0))
                    times[name].append(best)
                mse = float(np.mean((img.astype(np.float64) - rgb) ** 2))
                points[name][c].append((8 * len(data) / (rgb.shape[0] * rgb.shape[1]), psnr_from_mse(mse)))
        print(f.name, flush=True)
    curves = {k: [[float(np.mean([b for b, _ in v[c]])), float(np.mean([q for _, q in v[c]]))] for c in codes]
              for k, v in points.items()}
    return {"images": [f.name for f in kodak], "codes": codes, "curves_bpp_psnr": curves,
            "bd_rate_v3_vs_v2_percent": _bd_or_note(curves["v2"], curves["v3"]),
            "decode_seconds_wall_cpu_code128": {k: [float(np.median([t[0] for t in v])),
                                                    float(np.median([t[1] for t in v]))] for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    from evaluation.datasets import KODAK, TRAIN
    root = Path(__file__).resolve().parent.parent
    p = ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="v3 vs v2, equal steps from the same base state; estimated Kodak curves")
    c.add_argument("--state", default=str(root / "models" / "checkpoints" / "base.npz"))
    c.add_argument("--train-dir", default=str(TRAIN))
    c.add_argument("--train-limit", type=int, default=0, help="first N training files only (0 = all)")
    c.add_argument("--kodak", default=str(KODAK))
    c.add_argument("--kodak-limit", type=int, default=6)
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("--batch", type=int, default=4)
    c.add_argument("--patch", type=int, default=128)
    c.add_argument("--lr", type=float, default=1e-4)
    c.add_argument("--lr-new", type=float, default=0.0, help="learning rate of the slice nets (0 = --lr)")
    c.add_argument("--num-slices", type=int, default=8)
    c.add_argument("--hidden", type=int, default=64)
    c.add_argument("--lrp", action="store_true")
    c.add_argument("--train", choices=("all", "entropy"), default="all",
                   help="'all': every parameter, R + lambda*D; 'entropy': g_a and g_s frozen, rate only (cheap on CPU)")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--models", default="v2,v3", help="which of v2,v3 to train (a v2 run does not depend on the slice options)")
    c.add_argument("--codes", default="96,112,128,144,160", help="delta codes of the curve (128 = delta 1)")
    c.add_argument("--out", default="", help="write the result JSON here")
    c.add_argument("--save", default="", help="save both final parameter sets beside this path")
    k = sub.add_parser("coded", help="v2 vs v3 parameter sets (compare --save) through the real codec on Kodak")
    k.add_argument("--v2", required=True, help="v2 parameters .npz")
    k.add_argument("--v3", required=True, help="v3 parameters .npz")
    k.add_argument("--out-dir", required=True, help="where the two exported models and the registry go")
    k.add_argument("--kodak", default=str(KODAK))
    k.add_argument("--kodak-limit", type=int, default=6)
    k.add_argument("--codes", default="100,116,128,132,148", help="delta codes (128 = delta 1; 128 is timed)")
    k.add_argument("--out", default="", help="write the result JSON here")
    args = p.parse_args(argv)

    def body() -> int:
        res = compare(args) if args.cmd == "compare" else coded(args)
        text = json.dumps(res, indent=1)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return 0
    return one_line_errors(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
