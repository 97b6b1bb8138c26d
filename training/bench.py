"""Training speed: steps/s and megapixels/s of training.train's real step, per backend and dtype.

python -m training.bench [--batch 16 --patch 256] [--steps 30] [--backend tf|jax] [--tf-reference a5d10aa]

On a CPU it times the TF (oneDNN) step, in bfloat16 too where the CPU has it natively, and
the JAX step; on an accelerator the JAX step in float32 and bfloat16. Each step is
training.train's own (crops, loss, Adam), compiled before timing.
Two figures: `pipelined` runs --steps steps back to back and syncs once (what training
sees: JAX dispatches ahead), `synced` is the median of single steps each waited for.
--tf-reference REV also times the retired TF/Keras train step, read from git at REV
(models/hyperprior.py), on the same batch: the side-by-side figure in training/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _pool(patch: int, images: int = 16, seed: int = 0):
    from training.data import Pool
    rng = np.random.default_rng(seed)
    side = max(2 * patch, 256)
    return Pool.from_images([rng.integers(0, 256, (side, side + 32 * i % 96, 3), np.uint8) for i in range(images)])


def bench_step(backend: str, batch: int, patch: int, steps: int, warmup: int, n: int, m: int, dtype: str) -> dict:
    """One backend's training.train step (training/tf_step.py or training/jax_step.py), compiled before timing."""
    import jax

    from models import jax_transforms as J
    from training.config import TrainConfig
    from training.train import make_trainer
    cfg = TrainConfig(batch=batch, patch=patch, num_filters=n, latent_channels=m, compute_dtype=dtype, steps=10 ** 6)
    tr = make_trainer(backend, cfg, _pool(patch).arrays())
    state = tr.place({k: np.asarray(v) for k, v in J.init(jax.random.PRNGKey(0), n, m).items()})
    t = time.time()
    tr.compile(state, [])
    s = 0
    for _ in range(warmup):
        state, met = tr.step(state, s, 0.5, 100.0)
        s += 1
    tr.fetch([met])
    compile_s = time.time() - t
    synced = []
    for _ in range(max(3, steps // 3)):
        t = time.perf_counter()
        state, met = tr.step(state, s, 0.5, 100.0)
        tr.fetch([met])
        synced.append(time.perf_counter() - t)
        s += 1
    t = time.perf_counter()
    pending = []
    for _ in range(steps):
        state, met = tr.step(state, s, 0.5, 100.0)
        pending.append(met)
        s += 1
    tr.fetch(pending)
    piped = (time.perf_counter() - t) / steps
    version = jax.__version__ if backend == "jax" else __import__("tensorflow").__version__
    return {"impl": f"{backend.upper()} {version} ({dtype})", "device": tr.device_name(),
            "compile_s": compile_s, "pipelined_s": piped, "synced_s": statistics.median(synced)}


def bench_tf_reference(rev: str, batch: int, patch: int, steps: int, warmup: int, n: int, m: int) -> dict:
    """The TF/Keras step that training.train replaced, exactly as it was at `rev`."""
    src = subprocess.run(["git", "show", f"{rev}:models/hyperprior.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    import importlib.util

    import tensorflow as tf
    tf.config.experimental.enable_tensor_float_32_execution(False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "retired_hyperprior.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location("retired_hyperprior", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["retired_hyperprior"] = mod           # dataclasses look their module up
        spec.loader.exec_module(mod)
    model = mod.Hyperprior(mod.Widths(n, m))
    loss_cfg = mod.LossConfig(kind="lambda", lmbda=0.01)
    opt = tf.keras.optimizers.Adam(1e-4, global_clipnorm=1.0)
    x = tf.constant(np.random.default_rng(0).random((batch, patch, patch, 3)), tf.float32)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_cfg.loss(model(x, training=True), x)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss
    t = time.time()
    step(x).numpy()
    compile_s = time.time() - t
    for _ in range(warmup):
        step(x).numpy()
    synced = []
    for _ in range(max(3, steps // 3)):
        t = time.perf_counter()
        step(x).numpy()
        synced.append(time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(steps):
        out = step(x)
    out.numpy()
    piped = (time.perf_counter() - t) / steps
    return {"impl": f"TF {tf.__version__} retired step ({rev})", "device": "CPU", "compile_s": compile_s,
            "pipelined_s": piped, "synced_s": statistics.median(synced)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8, help="crops per step")
    p.add_argument("--patch", type=int, default=128, help="crop side in pixels")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    p.add_argument("--num-filters", type=int, default=128, help="N")
    p.add_argument("--latent-channels", type=int, default=192, help="M")
    p.add_argument("--dtype", default="", choices=["", "float32", "bfloat16"],
                   help="conv compute type (default: float32, plus bfloat16 where the CPU has it natively)")
    p.add_argument("--backend", default="", choices=["", "tf", "jax"],
                   help="time this step only (default: TF on a CPU, JAX on an accelerator; both where JAX sees a CPU)")
    p.add_argument("--tf-reference", default="", metavar="REV",
                   help="also time the retired TF step from git revision REV (e.g. a5d10aa)")
    args = p.parse_args(argv)
    import jax

    from models.cpu import native_bf16
    from training.validate import tf_available
    on_cpu = jax.default_backend() == "cpu"
    backends = [args.backend] if args.backend else (["tf", "jax"] if on_cpu and tf_available() else ["jax"])
    rows = []
    for backend in backends:
        dtypes = [args.dtype] if args.dtype else ["float32"] + (["bfloat16"] if backend == "jax" and not on_cpu
                                                               or backend == "tf" and native_bf16() else [])
        for dtype in dtypes:
            rows.append(bench_step(backend, args.batch, args.patch, args.steps, args.warmup, args.num_filters,
                                   args.latent_channels, dtype))
    if args.tf_reference:
        rows.append(bench_tf_reference(args.tf_reference, args.batch, args.patch, args.steps, args.warmup,
                                       args.num_filters, args.latent_channels))
    mp = args.batch * args.patch ** 2 / 1e6
    print(f"train step, batch {args.batch} x {args.patch}^2, N={args.num_filters}, M={args.latent_channels}")
    ref = next((r for r in rows if "retired" in r["impl"]), None)
    print("| implementation | device | compile s | pipelined steps/s | synced steps/s | Mpixel/s | vs retired |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rel = f"{ref['pipelined_s'] / r['pipelined_s']:.2f}x" if ref else "-"
        print(f"| {r['impl']} | {r['device']} | {r['compile_s']:.1f} | {1 / r['pipelined_s']:.2f} | "
              f"{1 / r['synced_s']:.2f} | {mp / r['pipelined_s']:.2f} | {rel} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
