"""Function-preserving widening of a training state: a wider model whose step 0 is the narrow one.

    python -m training.widen IN.npz OUT.npz --num-filters 192 --latent-channels 320

Why: the high-rate models lose most against the anchors, and width is the capacity they lack.
Starting the wide model from the trained narrow one (Net2Net-style, new channels with zero
outgoing weights) spends no CPU-hour relearning what the narrow model knows.

Old channels keep their indexes and new ones follow, except the hyper-synthesis output
(mu | log2 sigma): old mu at [0, M), old sigma at [M', M' + M), M' the new width. Per layer kind:
- conv / deconv: old -> old copied; new input -> old output exactly 0, so nothing the old
  network computes changes; new outputs get small random incoming weights (Glorot x
  `init_scale`) and zero bias, so they carry a signal from the start.
- GDN / IGDN: gamma[new in, old out] must be 0 in *value*. The reparametrised value is
  max(v, sqrt(min + P))^2 - P with P = GDN_PEDESTAL; v = sqrt(P) = 2^-18 gives exactly 0 (and
  at the bound the gradient passes both ways). New channels get tfc's fresh init: beta 1,
  gamma 0.1 I among themselves, 0 from the old channels.
- hyper-synthesis output: new log2 sigma = the scale table's floor (zero weights, bias
  LOG2_SCALE_MIN; sigma 0.105), so a new zero latent costs ~3e-6 bits; new mu: small random.
- z prior (z has N channels): new channels get a logistic of median 0 and slope PRIOR_SLOPE
  (factors 0: linear logits), so a zero z costs -log2 tanh(PRIOR_SLOPE / 4) = 1.3e-4 bits.

Why it can learn (a zero-outgoing channel sits on a saddle that the zero must not freeze):
the outgoing weights' gradient is (their input) x (the gradient downstream), so a new channel
needs a non-zero *value*. Hidden channels have one (random incoming weights). A new latent is
~0: under 'noise' quantisation y + u is not, and under 'ste' (t200's fine-tuning) y_hat =
mu + round(y - mu) = mu, which is why the new mu start small and random rather than 0: with
mu = 0 the synthesis weights out of a new latent get exactly zero gradient and the latent no
distortion gradient, for ever (tests/test_widen.py checks both). New z channels round to 0
under 'ste' too; they get gradient through the straight-through path into the new
hyper-synthesis channels, and wake after the new latents do.

Adam: the moments start fresh. A state holds none, and zero-padding a run checkpoint's moments
would give the new parameters nu = 0 under a bias correction of count >> 1: a first step of
~3.2 lr x sign(g) on exactly the weights whose zero keeps step 0 equal to the narrow model.
Fresh moments and the Adam-count warm-up (training/schedule.py) treat every parameter alike.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from models import network
from models.cli import ArgumentParser, one_line_errors

PROG = "python -m training.widen"
ROOT = Path(__file__).resolve().parent.parent
INIT_SCALE = 0.05      # new incoming weights: this fraction of Glorot; new latents stay ~0.01-0.1, far below 1/2
PRIOR_SLOPE = 20.0     # new z channels' logistic prior: P(z = 0) = tanh(5), 1.3e-4 bits
FRESH_BETA = float(np.sqrt(1.0 + network.GDN_PEDESTAL))
ZERO_GAMMA = float(np.sqrt(network.GDN_PEDESTAL))          # 2^-18: value exactly 0
FRESH_GAMMA_DIAG = float(np.sqrt(0.1 + network.GDN_PEDESTAL))


def _positions(old: int, new: int, split: bool) -> np.ndarray:
    """Indexes of the old channels along an axis of the new width: the first `old`, or each half's first."""
    if not split:
        return np.arange(old)
    return np.concatenate([np.arange(old // 2), new // 2 + np.arange(old // 2)])


def _widen_kernel(w: np.ndarray, shape: tuple, ip: np.ndarray, op: np.ndarray, rng, scale: float,
                  quiet_out: np.ndarray | None = None) -> np.ndarray:
    """HWIO kernel: random small, old block copied, new input -> old output 0, `quiet_out` columns 0."""
    k0, k1, cin, cout = shape
    lim = scale * np.sqrt(6.0 / (k0 * k1 * (cin + cout)))
    out = rng.uniform(-lim, lim, shape).astype(np.float32)
    new_in = np.setdiff1d(np.arange(cin), ip)
    taps = (np.arange(k0), np.arange(k1))
    out[np.ix_(*taps, new_in, op)] = 0.0
    out[np.ix_(*taps, ip, op)] = w
    if quiet_out is not None:
        out[..., quiet_out] = 0.0
    return out


def _widen_layer(p: dict, key: str, lo: network.Layer, ln: network.Layer, split: bool, rng, scale: float) -> dict:
    if lo.kind in ("gdn", "igdn"):
        beta = np.full(ln.cout, FRESH_BETA, np.float32)
        beta[:lo.cout] = p[f"{key}/reparam_beta"]
        gamma = np.full((ln.cout, ln.cout), ZERO_GAMMA, np.float32)
        new = np.arange(lo.cout, ln.cout)
        gamma[new, new] = FRESH_GAMMA_DIAG
        gamma[:lo.cout, :lo.cout] = p[f"{key}/reparam_gamma"]
        return {f"{key}/reparam_beta": beta, f"{key}/reparam_gamma": gamma}
    ip, op = _positions(lo.cin, ln.cin, False), _positions(lo.cout, ln.cout, split)
    bias = np.zeros(ln.cout, np.float32)
    bias[op] = p[f"{key}/bias"]
    quiet = None
    if split:                                   # new log2 sigma: at the scale table's floor, zero weights
        quiet = np.setdiff1d(np.arange(ln.cout // 2, ln.cout), op)
        bias[quiet] = network.LOG2_SCALE_MIN
    k = ln.kernel
    if lo.kind == "conv":
        kernel = _widen_kernel(p[f"{key}/kernel"], (k, k, ln.cin, ln.cout), ip, op, rng, scale, quiet)
    else:                                       # transposed kernels are stored (k, k, out, in)
        w = np.transpose(p[f"{key}/kernel"], (0, 1, 3, 2))
        kernel = np.transpose(_widen_kernel(w, (k, k, ln.cin, ln.cout), ip, op, rng, scale, quiet), (0, 1, 3, 2))
    return {f"{key}/kernel": kernel, f"{key}/bias": bias}


def _widen_prior(p: dict, old: int, new: int) -> dict:
    """New rows of the factorized prior: linear logits PRIOR_SLOPE * z (median 0, symmetric)."""
    f = (1,) + network.PRIOR_FILTERS + (1,)
    layers = len(f) - 1
    w = (PRIOR_SLOPE / float(np.prod(f[1:-1]))) ** (1.0 / layers)      # every entry w: slope = w^L prod(f)
    matrix = float(np.log(np.expm1(w)))                                  # softplus^-1
    out = {}
    for key, shape in network.prior_layout(new):
        a = np.full(shape, matrix if "/matrix_" in key else 0.0, np.float32)
        a[:old] = p[key]
        out[key] = a
    return out


def widen(params: dict, num_filters: int, latent_channels: int, seed: int = 0,
          init_scale: float = INIT_SCALE) -> dict:
    """The parameters of an N x M model that computes what `params` computes (module docstring)."""
    n0, m0 = network.widths_of(params)
    if num_filters < n0 or latent_channels < m0:
        raise ValueError(f"cannot widen N={n0} M={m0} to N={num_filters} M={latent_channels}: widths only grow")
    extra = sorted(k for k in params if k.split("/")[0] not in network.TRANSFORMS + ("z_prior",))
    if extra:
        raise ValueError(f"only the mean-scale model widens; found {extra[0]} (a charm model?)")
    rng = np.random.default_rng(seed)
    p = {k: np.asarray(v, np.float32) for k, v in params.items()}
    old, new = network.transforms(n0, m0), network.transforms(num_filters, latent_channels)
    out: dict = {}
    for t in network.TRANSFORMS:
        for i, (lo, ln) in enumerate(zip(old[t], new[t])):
            split = t == "hyper_synthesis" and i == len(new[t]) - 1
            out.update(_widen_layer(p, f"{t}/{lo.name}", lo, ln, split, rng, init_scale))
    out.update(_widen_prior(p, n0, num_filters))
    for key, shape in network.layout(num_filters, latent_channels):
        assert out[key].shape == tuple(shape), (key, out[key].shape, shape)
    return out


def widen_state(src: Path, dst: Path, num_filters: int, latent_channels: int, seed: int = 0,
                init_scale: float = INIT_SCALE, name: str = "") -> dict:
    """Widen a committed state (training/state.py) into a new one; returns the new state's metadata.

    The new state continues the parent (its step, R_t, beta and validation history): it is the
    same function, so resumed as `<name>.npz` it goes on where the parent was, wider. Its own
    record of runs and seconds starts empty; the parent's cost is in the lineage.
    """
    from training import state
    params, meta = state.load(Path(src))
    wide = widen(params, num_filters, latent_channels, seed, init_scale)
    meta = continuation(meta, str(src), num_filters, latent_channels, seed, init_scale, name or Path(dst).stem)
    state.save(wide, meta["step"], Path(dst), meta["config"], {k: v for k, v in meta.items()
                                                               if k not in ("step", "config")})
    return meta


def widened_parent(cfg) -> tuple[dict, dict]:
    """(parameters, metadata) of a config's `init_from` widened to its N and M and continued: how a run with
    `init_widen` starts (training/train.py, and training/device_pack.py for its first trip)."""
    from training import state
    params, parent = state.load(ROOT / cfg.init_from)
    params = widen(params, cfg.num_filters, cfg.latent_channels, cfg.seed)
    return params, continuation(parent, cfg.init_from, cfg.num_filters, cfg.latent_channels, cfg.seed, INIT_SCALE,
                                cfg.name)


def continuation(parent: dict, source: str, num_filters: int, latent_channels: int, seed: int,
                 init_scale: float, name: str) -> dict:
    """The metadata of the widened model: the parent's loop state, its config at the new widths and name."""
    cfg = dict(parent["config"], num_filters=num_filters, latent_channels=latent_channels, name=name)
    n0, m0 = int(parent["config"]["num_filters"]), int(parent["config"]["latent_channels"])
    record = {"name": parent["config"].get("name", Path(source).stem), "state": source, "step": parent["step"],
              "wall_seconds": parent.get("wall_seconds", 0.0),
              "widened": {"from": [n0, m0], "to": [num_filters, latent_channels], "seed": seed,
                          "init_scale": init_scale}}
    keep = ("train_target", "beta", "history")
    return {"step": int(parent["step"]), "config": cfg, **{k: parent[k] for k in keep if k in parent},
            "lineage": [record] + list(parent.get("lineage", [])), "wall_seconds": 0.0, "runs": []}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="state to widen (models/checkpoints/<name>.npz)")
    p.add_argument("dst", help="the widened state to write")
    p.add_argument("--num-filters", type=int, required=True, help="new N (filters, hyper-latent channels)")
    p.add_argument("--latent-channels", type=int, required=True, help="new M (latent channels)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new channels' small random weights")
    p.add_argument("--init-scale", type=float, default=INIT_SCALE,
                   help=f"new incoming weights as a fraction of Glorot's range (default {INIT_SCALE})")
    p.add_argument("--name", default="", help="the new model's config name (default: DST's stem)")
    args = p.parse_args(argv)

    def body() -> int:
        if Path(args.dst).resolve() == Path(args.src).resolve():
            raise ValueError("DST must differ from SRC (the narrow state stays as it is)")
        meta = widen_state(Path(args.src), Path(args.dst), args.num_filters, args.latent_channels, args.seed,
                           args.init_scale, args.name)
        was = meta["lineage"][0]["widened"]["from"]
        print(f"widened {args.src} (step {meta['step']}, N={was[0]} M={was[1]}) to N={args.num_filters} "
              f"M={args.latent_channels}: {args.dst} (Adam moments start fresh)")
        return 0
    return one_line_errors(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
