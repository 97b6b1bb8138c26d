"""Bitstream v3 training graph: channel-wise autoregressive entropy model (Minnen & Singh 2020, "CHARM").

y (M channels) is split into `num_slices` slices of S = M / num_slices channels. Slice i is coded
with a Gaussian whose mu and log2 sigma are the hyper-synthesis output for its channels plus a
correction from a small conv net (3 x conv3x3, ReLU) that sees those hyper outputs and every
already decoded slice y_hat_0 .. y_hat_{i-1}. Optional latent residual prediction (LRP) adds a
clipped correction clip(lrp(support, y_hat_i), -1/2, 1/2) to y_hat_i, as the paper does with
0.5*tanh; a clip because the codec runs it as an integer network (models/charm.py), where tanh
is not exact.

Why corrections to the hyper output, with the last layer initialised at zero: a v3 model that
starts from a trained mean-scale base (models/checkpoints/base.npz) starts at exactly the base's
loss and rate (tests/test_charm.py checks it), so no step is spent relearning g_a, g_s, h_a, h_s.

Parameters: the base's flat dict (models/jax_transforms.py) plus `charm/slice_<i>/<net>/conv_<j>/
{kernel,bias}` with net 'cc' (mu, log2 sigma) and optionally 'lrp'. The slice layout is read off
the parameter shapes, so `forward` needs no configuration. With no `charm/` keys, `forward` is
the mean-scale model (v2), which is how the comparison in `main` evaluates both on one code path.

python -m training.charm compare --train entropy --steps 800 --lr 1e-4 --lr-new 1e-3 --save runs/c/params.npz
python -m training.charm coded --v2 runs/c/params-v2.npz --v3 runs/c/params-v3.npz --out-dir runs/c/models
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from models import jax_transforms as J
from models import scale_table as S

PREFIX = "charm/"
KERNEL = 3
LRP_BOUND = 0.5


# -- parameter layout ------------------------------------------------------------------------------------

def support_channels(i: int, slice_depth: int, max_support: int) -> int:
    """Input channels of slice i's nets: its hyper mu and log2 sigma, plus the decoded slices it sees."""
    seen = i if max_support < 0 else min(i, max_support)
    return 2 * slice_depth + seen * slice_depth


def layout(latent_channels: int, num_slices: int, hidden: int, lrp: bool = False,
           max_support: int = -1) -> list[tuple[str, tuple]]:
    """(key, shape) of every slice-network tensor, slice by slice."""
    if latent_channels % num_slices:
        raise ValueError(f"M = {latent_channels} does not split into {num_slices} equal slices")
    s = latent_channels // num_slices
    out: list[tuple[str, tuple]] = []
    for i in range(num_slices):
        cin = support_channels(i, s, max_support)
        nets = [("cc", cin, 2 * s)] + ([("lrp", cin + s, s)] if lrp else [])
        for net, c0, cout in nets:
            widths = [c0, hidden, hidden, cout]
            for j in range(3):
                key = f"{PREFIX}slice_{i}/{net}/conv_{j}"
                out += [(f"{key}/kernel", (KERNEL, KERNEL, widths[j], widths[j + 1])), (f"{key}/bias", (widths[j + 1],))]
    return out


def init(key, latent_channels: int, num_slices: int, hidden: int, lrp: bool = False,
         max_support: int = -1) -> J.Params:
    """Glorot-uniform kernels, zero biases, and a zero last layer (the model starts as its base)."""
    import jax
    import jax.numpy as jnp
    items = layout(latent_channels, num_slices, hidden, lrp, max_support)
    keys = jax.random.split(key, len(items))
    p: J.Params = {}
    for (name, shape), k in zip(items, keys):
        if name.endswith("/bias") or "/conv_2/" in name:
            p[name] = jnp.zeros(shape, jnp.float32)
        else:
            kh, kw, a, b = shape
            lim = np.sqrt(6.0 / (kh * kw * (a + b)))
            p[name] = jax.random.uniform(k, shape, jnp.float32, -lim, lim)
    return p


def spec_of(params: J.Params) -> dict:
    """{'num_slices', 'slice_depth', 'hidden', 'lrp', 'max_support'} read off the shapes; num_slices 0 = v2."""
    n = sum(1 for k in params if k.startswith(PREFIX) and k.endswith("/cc/conv_0/kernel"))
    if not n:
        return {"num_slices": 0, "slice_depth": 0, "hidden": 0, "lrp": False, "max_support": -1}
    _, m = J.widths_of(params)
    s = m // n
    hidden = int(params[f"{PREFIX}slice_0/cc/conv_0/kernel"].shape[-1])
    last_in = int(params[f"{PREFIX}slice_{n - 1}/cc/conv_0/kernel"].shape[2])
    seen = last_in // s - 2
    return {"num_slices": n, "slice_depth": s, "hidden": hidden, "lrp": f"{PREFIX}slice_0/lrp/conv_0/kernel" in params,
            "max_support": -1 if seen == n - 1 else seen}


def net_layers(params: J.Params, i: int, net: str = "cc") -> list[tuple[str, np.ndarray, np.ndarray, bool]]:
    """(kind, kernel, bias, relu) per layer of one slice network, as models/charm.from_float takes them."""
    key = f"{PREFIX}slice_{i}/{net}"
    return [("conv", np.asarray(params[f"{key}/conv_{j}/kernel"]), np.asarray(params[f"{key}/conv_{j}/bias"]), j < 2)
            for j in range(3)]


def to_int(params: J.Params):
    """Quantise the slice networks (models/charm.from_float per net): the v3 model file's IntCharm."""
    from models import charm as MC
    spec = spec_of(params)
    if not spec["num_slices"]:
        raise ValueError("these parameters have no slice networks (a v2 model)")
    n = spec["num_slices"]
    cc = [MC.from_float(net_layers(params, i, "cc")) for i in range(n)]
    lrp = [MC.from_float(net_layers(params, i, "lrp")) for i in range(n)] if spec["lrp"] else None
    return MC.IntCharm(n, spec["slice_depth"], spec["max_support"], cc, lrp)


# -- the graph -------------------------------------------------------------------------------------------

def slice_net(p: J.Params, i: int, net: str, x):
    import jax.nn as nn
    key = f"{PREFIX}slice_{i}/{net}"
    h = nn.relu(J.conv(x, p[f"{key}/conv_0/kernel"], p[f"{key}/conv_0/bias"]))
    h = nn.relu(J.conv(h, p[f"{key}/conv_1/kernel"], p[f"{key}/conv_1/bias"]))
    return J.conv(h, p[f"{key}/conv_2/kernel"], p[f"{key}/conv_2/bias"])


def _bound_log2(v):
    return J.upper_bound(J.lower_bound(v, S.LOG2_SCALE_MIN), S.LOG2_SCALE_MAX)


def slice_params(p: J.Params, i: int, mu_h, ls_h, decoded: list, spec: dict):
    """(mu, bounded log2 sigma) of slice i from its hyper outputs and the decoded slices it sees."""
    import jax.numpy as jnp
    s = spec["slice_depth"]
    seen = decoded if spec["max_support"] < 0 else decoded[:spec["max_support"]]
    o = slice_net(p, i, "cc", jnp.concatenate([mu_h, ls_h] + seen, axis=-1))
    return mu_h + o[..., :s], _bound_log2(ls_h + o[..., s:])


def entropy(p: J.Params, y, key=None, quantization: str = "noise", delta=1.0):
    """(bits of y, bits of z, y_hat) for latents y: the hyperprior and the slice loop, without the transforms g_a, g_s.

    key=None evaluates: z_hat = round(z), s = round((y - mu)/delta), y_hat = mu + s*delta, and the
    rates are the discrete likelihoods of z_hat and s (s under N(0, sigma/delta), as the codec's scale
    index codes it). Training (key given): noisy latents for the rates; the decoded slices the next
    slices see are noisy ('noise') or straight-through rounded ('ste'), as g_s sees them.
    """
    import jax
    import jax.numpy as jnp

    from training.model import LN2, _ste_round, y_log_prob, z_log_prob
    spec = spec_of(p)
    z = J.hyper_analysis(p, y)
    m = y.shape[-1]
    if key is None:
        z_hat = z_r = jnp.round(z)
    else:
        kz, ky = jax.random.split(key)
        z_r = z + jax.random.uniform(kz, z.shape, z.dtype, -0.5, 0.5)
        z_hat = _ste_round(z) if quantization == "ste" else z_r
        noise = jax.random.uniform(ky, y.shape, y.dtype, -0.5, 0.5)
    h = J.hyper_synthesis(p, z_hat)
    mu_h, ls_h = h[..., :m], _bound_log2(h[..., m:])
    n = max(1, spec["num_slices"])
    s = m // n
    decoded, bits_y = [], 0.0
    log2_delta = jnp.log2(jnp.asarray(delta, jnp.float32))
    for i in range(n):
        sl = slice(i * s, (i + 1) * s)
        if spec["num_slices"]:
            mu, ls = slice_params(p, i, mu_h[..., sl], ls_h[..., sl], decoded, spec)
        else:
            mu, ls = mu_h, ls_h
        yi = y[..., sl]
        if key is None:
            sym = jnp.round((yi - mu) / delta)
            y_hat = mu + sym * delta
            ls_d = jnp.clip(ls - log2_delta, S.LOG2_SCALE_MIN, S.LOG2_SCALE_MAX)
            bits_y = bits_y - jnp.sum(y_log_prob(sym, 0.0, jnp.exp2(ls_d))) / LN2
        else:
            y_noisy = yi + noise[..., sl]
            y_hat = mu + _ste_round(yi - mu) if quantization == "ste" else y_noisy
            bits_y = bits_y - jnp.sum(y_log_prob(y_noisy, mu, jnp.exp2(ls))) / LN2
        if spec["lrp"]:
            seen = decoded if spec["max_support"] < 0 else decoded[:spec["max_support"]]
            r = slice_net(p, i, "lrp", jnp.concatenate([mu_h[..., sl], ls_h[..., sl]] + seen + [y_hat], axis=-1))
            y_hat = y_hat + jnp.clip(r, -LRP_BOUND, LRP_BOUND)
        decoded.append(y_hat)
    bits_z = -jnp.sum(z_log_prob(p, z_r)) / LN2
    return bits_y, bits_z, jnp.concatenate(decoded, axis=-1)


def forward(p: J.Params, x, key=None, quantization: str = "noise", dtype=None, delta=1.0) -> dict:
    """x (NHWC, 0..1) -> bpp, bpp_y, bpp_z, mse (0..255), x_hat; the contract of training.model.forward."""
    import jax.numpy as jnp
    bits_y, bits_z, y_hat = entropy(p, J.analysis(p, x, dtype), key, quantization, delta)
    x_hat = J.synthesis(p, y_hat, dtype)
    num_pixels = x.shape[0] * x.shape[1] * x.shape[2]
    mse = jnp.mean(jnp.square(x * 255.0 - x_hat * 255.0))
    return {"bpp": (bits_y + bits_z) / num_pixels, "bpp_y": bits_y / num_pixels, "bpp_z": bits_z / num_pixels,
            "mse": mse, "x_hat": x_hat}


def kmac_per_pixel(latent_channels: int, num_slices: int, hidden: int, lrp: bool = False,
                   max_support: int = -1) -> float:
    """Multiply-accumulates of the slice networks per image pixel (one y position is 16 x 16 pixels)."""
    macs = sum(int(np.prod(shape)) for k, shape in layout(latent_channels, num_slices, hidden, lrp, max_support)
               if k.endswith("/kernel"))
    return macs / 256 / 1000


def with_slices(base: J.Params, key, num_slices: int, hidden: int, lrp: bool = False,
                max_support: int = -1) -> J.Params:
    """A v3 parameter set that starts as `base` (its slice nets output zero)."""
    _, m = J.widths_of(base)
    out = {k: np.asarray(v) for k, v in base.items()}
    out.update({k: np.asarray(v) for k, v in init(key, m, num_slices, hidden, lrp, max_support).items()})
    return out


def ensure_slices(params: J.Params, cfg) -> J.Params:
    """The parameters as a v3 model: unchanged if they have slice nets, else the config's nets added at zero."""
    import jax
    if spec_of(params)["num_slices"]:
        return params
    return with_slices(params, jax.random.PRNGKey(cfg.seed), cfg.charm_slices, cfg.charm_hidden, cfg.charm_lrp)


# -- v3 against v2 from the same start -------------------------------------------------------------------

def bd_rate(r1, d1, r2, d2) -> float:
    """Bjontegaard delta rate (%) of curve 2 against curve 1: cubic fit of log rate in PSNR, averaged over the overlap."""
    l1, l2 = np.log(np.asarray(r1, float)), np.log(np.asarray(r2, float))
    p1, p2 = np.polyfit(d1, l1, min(3, len(d1) - 1)), np.polyfit(d2, l2, min(3, len(d2) - 1))
    lo, hi = max(min(d1), min(d2)), min(max(d1), max(d2))
    if hi <= lo:
        raise ValueError("the curves do not overlap in PSNR")
    i1, i2 = np.polyint(p1), np.polyint(p2)
    a1 = (np.polyval(i1, hi) - np.polyval(i1, lo)) / (hi - lo)
    a2 = (np.polyval(i2, hi) - np.polyval(i2, lo)) / (hi - lo)
    return float((np.exp(a2 - a1) - 1) * 100)


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
            "bd_rate_v3_vs_v2_percent": bd_rate(*zip(*curves["v2"]), *zip(*curves["v3"])),
            "decode_seconds_wall_cpu_code128": {k: [float(np.median([t[0] for t in v])),
                                                    float(np.median([t[1] for t in v]))] for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    from evaluation.datasets import KODAK, TRAIN
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(prog="python -m training.charm", description=__doc__,
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
    res = compare(args) if args.cmd == "compare" else coded(args)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
