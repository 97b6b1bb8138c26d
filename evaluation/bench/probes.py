"""One-off probes beside the regular operations: where synthesis time goes (a worker op), and the whole-CLI
start-up of `decoder/decode.sh` against a bare `import tensorflow` (run from the bench process)."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from evaluation.bench.measure import ROOT, _now, child_env
from evaluation.bench.ops import _decoder_ready, _step_macs


def _op_profile_synthesis(spec: dict, res: dict) -> None:
    """Time each step of the synthesis on the stream's whole y_hat (eager, step by step)."""
    D, models, data, header = _decoder_ready(spec, res)
    import tensorflow as tf
    syn = models.get(header).synthesis
    y = tf.constant(D.dequantize(D.parse(data, models))[None])
    steps = syn.steps()                                   # (name, kind, weight shape, fn): models.synthesis
    per: list[list[float]] = [[] for _ in steps]
    shapes, macs = [], []
    for run in range(int(spec["runs"]) + 1):             # run 0 warms up every shape
        x = y
        for i, (_, kind, wshape, fn) in enumerate(steps):
            t = _now()
            x = fn(x)
            _ = x.numpy().ravel()[:1]                    # make sure the op has finished
            if run:
                per[i].append(_now() - t)
            else:
                shapes.append(list(x.shape[1:]))
                macs.append(_step_macs(kind, wshape, x.shape))
    res["layers"] = [{"name": name, "kind": kind, "out_shape": sh, "gmacs": m / 1e9, "median_s": statistics.median(ts)}
                     for (name, kind, _, _), sh, m, ts in zip(steps, shapes, macs, per)]
    res["median_s"] = sum(d["median_s"] for d in res["layers"])
    res["width"], res["height"] = header.width, header.height
    res["threads"] = {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                      "inter": tf.config.threading.get_inter_op_parallelism_threads()}
    res["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(default)")


# --------------------------------------------------------------------------- CLI start-up

CLI_CALLS = ("import_tensorflow", "import_tensorflow_as_decoder", "decode_sh")
CLI_LABELS = {"import_tensorflow": 'python -c "import tensorflow"',
              "import_tensorflow_as_decoder": "TF imported as the decoder does",
              "decode_sh": "decoder/decode.sh IN.bit OUT.png"}


def cli_startup(stream: Path, registry: Path, runs: int, work: Path) -> dict:
    """What a user's decode costs: whole `decoder/decode.sh STREAM OUT.png` calls vs bare
    `python -c "import tensorflow"` calls, interleaved so all see the same machine at the same moment.

    A third call imports TensorFlow as the decoder does (models.runtime.import_tensorflow: without the
    JAX import TensorFlow makes on the side when jax is installed), so the report can tell the decode's
    own cost from what skipping JAX saves. All run the same interpreter: decode.sh's own (.venv) when
    this is it, else this one through $RATELOCK_PYTHON. Wall seconds per call (perf_counter around the
    child) and its CPU seconds (user + sys of the waited-for children); medians, and the differences.
    """
    from decoder.bitstream import parse_header
    env = child_env()
    venv_py = ROOT / ".venv" / "bin" / "python"
    if Path(sys.executable).absolute() != venv_py.absolute():
        env["RATELOCK_PYTHON"] = sys.executable
    out = work / "cli_startup.png"
    cmds = {"import_tensorflow": [sys.executable, "-c", "import tensorflow"],
            "import_tensorflow_as_decoder": [sys.executable, "-c",
                                             "from models.runtime import import_tensorflow; import_tensorflow()"],
            "decode_sh": ["bash", str(ROOT / "decoder" / "decode.sh"), str(stream), str(out),
                          "--registry", str(registry)]}
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(runs):
        for name, cmd in cmds.items():
            print(f"[{time.strftime('%H:%M:%S')}] CLI start-up {i + 1}/{runs}: {name} ...", file=sys.stderr, end="",
                  flush=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            try:
                r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                print(" timed out", file=sys.stderr)
                return {"error": f"{name} timed out after 600 s"}
            dt = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f" {dt:.2f} s", file=sys.stderr, flush=True)
            if r.returncode != 0:
                tail = (r.stderr.strip().splitlines() or ["no message"])[-1]
                return {"error": f"{name} exited with status {r.returncode}: {tail}"}
            wall[name].append(dt)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    out.unlink(missing_ok=True)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    h = parse_header(stream.read_bytes())
    return {"runs": runs, "width": h.width, "height": h.height, "bytes": stream.stat().st_size,
            "interpreter": sys.executable, "wall_s": wall, "cpu_s": cpu, "median_s": med, "cpu_median_s": cpu_med,
            "beyond_tf_s": med["decode_sh"] - med["import_tensorflow"],
            "cpu_beyond_tf_s": cpu_med["decode_sh"] - cpu_med["import_tensorflow"],
            "beyond_decoder_tf_s": med["decode_sh"] - med["import_tensorflow_as_decoder"],
            "cpu_beyond_decoder_tf_s": cpu_med["decode_sh"] - cpu_med["import_tensorflow_as_decoder"]}
