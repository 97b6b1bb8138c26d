"""The device side of the GPU parity step: the float synthesis of every packed stream, in JAX.

  python -m conformance.gpu.run --pack gpu-pack --out $OUT

Runs where there is no TensorFlow (the lent H200: Python 3.12, numpy 2, jax 0.11), so it imports
none: the parse already ran on the CPU (conformance.gpu.pack), and this rebuilds y_hat from the
carried integers with the decoder's formula, checks the hashes of those integers and of y_hat
against the pack's, and synthesises with decoder.jax_synthesis.JaxSynthesis, tiled exactly as
models.synthesis.synthesize (imported: it loads no TensorFlow), full fp32 (no TF32).

Per stream, one untimed run compiles every tile shape, then --repeat timed runs (dequantise +
synthesis + rounding to uint8; the parse is not timed, it did not run here). Written as it goes
into --out: gpu_report.json (device, jax version, matmul precision, per-stream seconds, peak
device memory) after every stream, and the uint8 decodes in at most --max-shards npz files of
at most --shard-mib each, so a killed run still returns every finished decode.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from conformance.gpu import format as F
from models.cli import ArgumentParser, one_line_errors  # noqa: E402

PROG = "python -m conformance.gpu.run"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default="gpu-pack", help="the pack built by conformance.gpu.pack (default gpu-pack)")
    p.add_argument("--out", required=True, help="output folder ($OUT on the device)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per stream after the compile run (default 3)")
    p.add_argument("--only", default="", help="comma-separated kinds to run: golden,kodak,big (default all)")
    p.add_argument("--max-shards", type=int, default=6, help="decode files at most (default 6)")
    p.add_argument("--shard-mib", type=float, default=15.0, help="bytes per decode file at most, MiB (default 15)")
    return p.parse_args(argv)


def _peak_bytes(device) -> int:
    try:
        return int((device.memory_stats() or {}).get("peak_bytes_in_use", 0))
    except Exception:  # noqa: BLE001 - CPU devices have no memory stats on some versions
        return 0


def _settings() -> dict:
    """decoder.jax_synthesis.settings(), or the same fields read another way should a newer jax refuse it."""
    from decoder.jax_synthesis import settings
    try:
        return settings()
    except Exception as e:  # noqa: BLE001 - the device's jax (0.11) is newer than this venv's (0.4.34)
        import os

        import jax
        d = jax.devices()[0]
        return {"backend": "jax", "jax": jax.__version__, "platform": d.platform,
                "device": getattr(d, "device_kind", d.platform),
                "matmul_precision": str(getattr(jax.config, "values", {}).get("jax_default_matmul_precision")),
                "tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE"), "settings_error": str(e)}


def run(args: argparse.Namespace) -> dict:
    from decoder.jax_synthesis import configure
    configure()                                         # before JAX initialises: full fp32, no TF32
    import jax

    from decoder.jax_synthesis import JaxSynthesis
    from models.synthesis import synthesize, to_uint8

    pack = Path(args.pack)
    manifest = F.load_manifest(pack)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = {k for k in args.only.split(",") if k}
    device = jax.devices()[0]
    report: dict = {"format": F.FORMAT, "pack_git": manifest.get("git"), "pack_created": manifest.get("created"),
                    **_settings(), "devices": [str(d) for d in jax.devices()], "python": platform.python_version(),
                    "numpy": np.__version__, "repeat": args.repeat, "parse": "not run on this device: the pack "
                    "carries the CPU parse's integers; their hashes and y_hat's are checked here",
                    "streams": [], "peak_bytes": 0, "finished": False}
    rpath = out / F.REPORT

    def save() -> None:
        report["peak_bytes"] = _peak_bytes(device)
        F.write_atomic(rpath, json.dumps(report, indent=1).encode())

    save()
    print(f"{report['device']} ({report['platform']}), jax {report['jax']}, numpy {np.__version__}, "
          f"matmul precision {report['matmul_precision']}, {len(manifest['streams'])} streams", flush=True)
    shards = F.ShardWriter(out, int(args.shard_mib * F.MiB), args.max_shards)
    synths: dict[str, JaxSynthesis] = {}
    for s in manifest["streams"]:
        if kinds and s["kind"] not in kinds:
            continue
        rec: dict = {"name": s["name"], "kind": s["kind"], "width": s["width"], "height": s["height"]}
        try:
            arrays = F.load_npz(pack / s["file"])
            rec["payload_ok"] = F.payload(arrays) == s["payload_hash"]
            y = F.y_hat(arrays, s["delta_code"])
            rec["y_hat_ok"] = F.float_hash(y) == s["y_hat_hash"]
            if s["model"] not in synths:
                m = manifest["models"][s["model"]]
                synths[s["model"]] = JaxSynthesis(F.model_weights(pack, m), m["num_filters"], m["latent_channels"])
            syn = synths[s["model"]]
            t0 = time.perf_counter()
            img = to_uint8(synthesize(syn, y), s["width"], s["height"])       # compiles each tile shape
            rec["first_s"] = round(time.perf_counter() - t0, 4)
            times, same = [], True
            for _ in range(max(args.repeat, 0)):
                t0 = time.perf_counter()
                again = to_uint8(synthesize(syn, F.y_hat(arrays, s["delta_code"])), s["width"], s["height"])
                times.append(time.perf_counter() - t0)
                same = same and bool(np.array_equal(again, img))
            rec["seconds"] = [round(t, 5) for t in times]
            rec["decode_s"] = round(min(times), 5) if times else None
            rec["repeat_identical"] = same
            rec["shard"] = shards.add(s["name"], img)
            if rec["shard"] is None:
                rec["note"] = "decode not returned: the decode files' budget is spent"
        except Exception as e:  # noqa: BLE001 - one stream's failure is reported, the run goes on
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        report["streams"].append(rec)
        save()
        print(f"  {s['name']}: {rec.get('decode_s', '-')} s (first {rec.get('first_s', '-')} s)"
              f"{'  ERROR ' + rec['error'] if 'error' in rec else ''}", flush=True)
    report["finished"] = True
    save()
    return report


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    return one_line_errors(PROG, lambda: _main(args), status=2)


def _main(args) -> int:
    rep = run(args)
    bad = [r["name"] for r in rep["streams"] if "error" in r or not r.get("payload_ok") or not r.get("y_hat_ok")]
    print(f"{len(rep['streams']) - len(bad)}/{len(rep['streams'])} streams synthesised from verified inputs; "
          f"peak device memory {rep['peak_bytes'] / F.MiB:.0f} MiB; report {Path(args.out) / F.REPORT}", flush=True)
    if bad:
        print(f"{PROG}: error: {len(bad)} streams failed or had mismatched inputs: {', '.join(bad[:5])}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
