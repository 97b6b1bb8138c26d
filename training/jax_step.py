"""The training step in JAX: the accelerator backend of training.train (`--backend jax`).

Runs on whatever JAX finds: a lent GPU, several devices (data parallel over all local devices:
a 1-D mesh, batch split, parameters replicated, XLA inserts the all-reduce), or the CPU, where
the TF backend (training/tf_step.py) is 3x faster. Crops are sampled inside the compiled step
from the pixel pool on the device, so the loop has no per-step host work; the random key is a
function of the step, so a resumed run sees what an unbroken one would.
"""

from __future__ import annotations

import time

import numpy as np

from training.data import step_delta


class Trainer:
    """The compiled step, the evaluation functions and the device placement of one run.

    State is the pair (params, optax state), passed through training.train's loop.
    """

    backend = "jax"

    def __init__(self, cfg, pool_arrays: tuple):
        import jax
        import jax.numpy as jnp
        import optax
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        from training.data import sample_crops
        from training.loss import Loss
        from training.model import forward
        from training.schedule import learning_rate
        if cfg.model == "charm":
            from training.charm import forward  # noqa: F811 - bitstream v3's slice entropy model
            if tuple(cfg.delta_range) != (1.0, 1.0):
                raise ValueError("delta_range trains the mean-scale model only (charm's slices see delta 1)")
        self.cfg = cfg
        devices = np.array(jax.devices())
        if cfg.batch % len(devices):
            raise ValueError(f"batch {cfg.batch} does not split over {len(devices)} devices")
        self.lead = jax.process_index() == 0
        self.mesh = Mesh(devices, ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P("data"))
        self.pool = tuple(self._global(a) for a in pool_arrays)
        chain = [optax.clip_by_global_norm(cfg.clipnorm)] if cfg.clipnorm else []
        self.optimizer = optax.chain(*chain, optax.scale_by_adam(eps=1e-7))   # Keras Adam's epsilon
        loss = Loss(cfg.loss, cfg.lmbda, cfg.mse_weight, cfg.msssim_weight)
        dtype = None if cfg.compute_dtype == "float32" else jnp.dtype(cfg.compute_dtype)
        seed_key = jax.random.PRNGKey(cfg.seed)

        def step_fn(params, opt_state, pool, step, rt, beta, delta):
            key = jax.random.fold_in(seed_key, step)            # resumable: the key is a function of the step
            kc, kn = jax.random.split(key)
            x = jax.lax.with_sharding_constraint(sample_crops(pool, kc, cfg.batch, cfg.patch), self.sharded)

            def objective(p):
                out = forward(p, x, kn, cfg.quantization, dtype, delta=delta)
                return loss(out, x, rt, beta), out

            (value, out), grads = jax.value_and_grad(objective, has_aux=True)(params)
            count = opt_state[-1].count                    # optax.scale_by_adam's steps so far
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            lr = learning_rate(cfg, step, count)
            params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
            return params, opt_state, jnp.stack([value, out["bpp"], out["mse"]])

        self._step = jax.jit(step_fn, donate_argnums=(0, 1))
        self.evaluate = jax.jit(lambda p, x: {k: v for k, v in forward(p, x).items() if k != "x_hat"})
        self._reconstruct = jax.jit(lambda p, x: forward(p, x)["x_hat"])
        self._evaluators: dict[tuple, object] = {}     # shape -> executable compiled before the clock

    def _global(self, a: np.ndarray):
        """A replicated global array from host data (every process holds the same)."""
        import jax
        return jax.make_array_from_callback(a.shape, self.replicated, lambda idx: a[idx])

    def place(self, params: dict, leaves: list | None = None):
        """Device-placed (params, optimiser state): Adam fresh, or from a checkpoint's flattened leaves."""
        import jax
        params = {k: self._global(np.asarray(v, np.float32)) for k, v in params.items()}
        opt_state = self.optimizer.init(params)
        if leaves is None:
            return params, jax.tree_util.tree_map(lambda a: self._global(np.asarray(a)), opt_state)
        return params, jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(opt_state),
                                                    [self._global(np.asarray(a)) for a in leaves])

    def host_params(self, state) -> dict:
        import jax
        return {k: np.asarray(v) for k, v in jax.device_get(state[0]).items()}

    def host_leaves(self, state) -> list[np.ndarray]:
        import jax
        return [np.asarray(a) for a in jax.tree_util.tree_leaves(jax.device_get(state[1]))]

    def device_name(self) -> str:
        import jax
        d = jax.devices()[0]
        return f"{len(jax.devices())} x {getattr(d, 'device_kind', d.platform)} ({d.platform})"

    def compile(self, state, eval_shapes: list[tuple]) -> float:
        """Compile the step and every evaluation shape before the clock starts; returns seconds spent."""
        import jax
        import jax.numpy as jnp
        t = time.time()
        params, opt_state = state
        args = (params, opt_state, self.pool, jnp.int32(0), jnp.float32(1.0), jnp.float32(1.0), jnp.float32(1.0))
        self._step = self._step.lower(*args).compile()
        for shape in sorted(set(eval_shapes)):
            self._evaluators[shape] = self.evaluate.lower(params, jax.ShapeDtypeStruct(shape, jnp.float32)).compile()
        return time.time() - t

    def step(self, state, step: int, rt: float, beta: float):
        """One step, dispatched ahead (no host sync); returns (state, metrics on the device)."""
        import jax.numpy as jnp
        delta = jnp.float32(step_delta(self.cfg.delta_range, self.cfg.seed, step))
        params, opt_state, metrics = self._step(state[0], state[1], self.pool, jnp.int32(step), jnp.float32(rt),
                                                jnp.float32(beta), delta)
        return (params, opt_state), metrics

    def fetch(self, pending: list) -> np.ndarray:
        """The pending steps' metrics on the host: the loop's only sync."""
        import jax
        import jax.numpy as jnp
        return np.asarray(jax.device_get(jnp.stack(pending)))

    def reconstruct(self, state, images: list[np.ndarray]) -> list[np.ndarray]:
        """The float reconstructions (rounded latents) of uint8 images, for TensorBoard."""
        return [np.asarray(self._reconstruct(state[0], im[None].astype(np.float32) / 255.0))[0] for im in images]

    def estimate(self, state, images: list[np.ndarray]) -> tuple[list[float], list[float]]:
        """Per-image estimated bpp (rounded latents' likelihoods) and PSNR-RGB of the float reconstruction."""
        from evaluation.metrics import psnr_from_mse
        bpp, psnr = [], []
        for img in images:
            x = img[None].astype(np.float32) / 255.0
            out = self._evaluators.get(x.shape, self.evaluate)(state[0], x)   # AOT executables are not in jit's cache
            bpp.append(float(out["bpp"]))
            psnr.append(psnr_from_mse(float(out["mse"])))
        return bpp, psnr
