"""The pair of full-size models `python -m evaluation.bench --v3` compares: bitstream v2 and v3 of one network.

    python -m training.bench_models --out DIR [--state models/checkpoints/base.npz]
                                    [--config training/configs/charm.yaml]

No trained full-size v3 model is committed, but decode cost does not depend on training. Both models are
built from the committed base state (N=128, M=192, the shipped architecture):

- v2 (`bench_v2`, registered for 0.50): the base state exported as it is;
- v3 (`bench_v3`, registered for 0.25): the same state with the config's slice networks added by
  `training.charm.with_slices` (charm.yaml: 8 slices of 24 channels, hidden 32, no LRP), exported with
  `training.export.export_v3`, as `python -m training.v3_experiment coded` does. Their last layers start at zero,
  so v3 codes the same symbols as v2 on the same image: the difference between the two decodes is the
  slice loop's cost alone (its products run whatever the weights are).

DIR gets both models and registry.yaml. evaluation/ may not import training/ (tests/test_structure.py),
so the bench runs this module in a subprocess and caches DIR (evaluation/bench/plan.py, `--v3`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from models.cli import ArgumentParser, one_line_errors

ROOT = Path(__file__).resolve().parent.parent
V2_NAME, V3_NAME = "bench_v2", "bench_v3"
V2_TARGET, V3_TARGET = 0.5, 0.25

PROG = "python -m training.bench_models"


def build(out: Path, state_path: Path, config_path: Path) -> Path:
    """Export the v2 and v3 models into `out` and register them; returns the registry path."""
    import jax

    from training import config, state
    from training.charm import kmac_per_pixel, spec_of, with_slices
    from training.export import export, export_v3, register
    cfg = config.load(config_path)
    base, meta = state.load(state_path)
    v3 = with_slices(base, jax.random.PRNGKey(cfg.seed), cfg.charm_slices, cfg.charm_hidden, cfg.charm_lrp)
    spec = spec_of(v3)
    info = {"trained": False, "bench_pair": True, "from_state": str(state_path), "step": meta["step"],
            "slices": spec}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "registry.tmp.yaml"
    tmp.unlink(missing_ok=True)
    export({k: np.asarray(v) for k, v in base.items()}, V2_NAME, info, out)
    export_v3(v3, V3_NAME, info, out)
    note = f"bench only: base state step {meta['step']}"
    register(tmp, out / V2_NAME, V2_NAME, [V2_TARGET], meta["step"] > 0, note + ", bitstream v2")
    register(tmp, out / V3_NAME, V3_NAME, [V3_TARGET], False,
             note + f" + {spec['num_slices']} slices x {spec['slice_depth']}, hidden {spec['hidden']}, "
             f"lrp {spec['lrp']} (untrained slice nets, zero last layer), bitstream v3")
    os.replace(tmp, out / "registry.yaml")
    m = int(spec["num_slices"] * spec["slice_depth"])
    print(f"built {out / 'registry.yaml'}: {V2_NAME} (v2) and {V3_NAME} (v3, {spec['num_slices']} slices, hidden "
          f"{spec['hidden']}, slice nets {kmac_per_pixel(m, spec['num_slices'], spec['hidden'], spec['lrp']):.2f} "
          "kMAC/pixel)")
    return out / "registry.yaml"


def main(argv: list[str] | None = None) -> int:
    """The command line; any failure is one line on stderr (models.cli)."""
    return one_line_errors(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = ArgumentParser(prog="python -m training.bench_models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the two models and registry.yaml")
    p.add_argument("--state", default=str(ROOT / "models" / "checkpoints" / "base.npz"), help="the base state")
    p.add_argument("--config", default=str(ROOT / "training" / "configs" / "charm.yaml"),
                   help="where the slice settings come from (charm_slices, charm_hidden, charm_lrp, seed)")
    args = p.parse_args(argv)
    build(Path(args.out), Path(args.state), Path(args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
