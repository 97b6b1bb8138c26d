"""One benchmark operation in its own process, so that peak RSS and start-up are its own.

    python -m evaluation.bench.worker SPEC.json RESULT.json

SPEC is written by `evaluation.bench.plan.Runner`; RESULT gets one JSON object. Only the
standard library is imported at module level: numpy, TensorFlow and the codec
are imported inside `run()` and timed there, so the start-up split is real.

Ops (spec["op"]):
  startup_decode  import + registry + lazy load of the one model a stream needs + first synthesis call
  startup_encode  import + Encoder() + load of the model a fixed encode needs + first-call trace
  decode          ours: decoder.decode.decode_bytes(stream), `runs` times after a tiny warm-up
  profile_synthesis  ours: each synthesis step timed on the stream's whole y_hat (where decode time goes)
  decode_set      ours: several models' streams of the same images (bitstream v2 vs v3), decoded interleaved,
                  image by image, `runs` times each: wall and CPU seconds per decode, stages and kMAC/pixel per model
  encode_search   ours: Encoder.encode(rgb, target) (full rate search)
  encode_fixed    ours: Encoder.encode_fixed(rgb, model_index, delta_code) (no search)
  encode_set      ours: Encoder.encode_fixed of each image with each named model at one delta code (untimed set-up)
  anchor_match    evaluation.ratematch.match_rate of an anchor's knob to a target bpp (set-up, untimed)
  anchor_encode   evaluation.codecs anchor: codec.encode(rgb, knob)
  anchor_decode   evaluation.codecs anchor: codec.decode(stream, h, w)

Timings of the codec's own functions are taken around the official entry points
(decode_bytes, Encoder.encode, Encoder.encode_fixed). The decoder's per-stage split
comes from its own hook: `decode_bytes(..., stages=Stages())` enters `stages(name)`
around parse (with range decoding of z, the integer hyper-synthesis, and range
decoding of y or the v3 slice loop inside it), dequantize, synthesis and to_uint8;
nothing in the decoder is replaced. The encoder's split comes from its own hook in
the same way (`EncoderModels.stages`): analysis (with g_a and the integer
hyper-synthesis inside), code per rate probe, range_encode and reconstruct.

Peak RSS is the process's high-water mark at the end: VmHWM from /proc/self/status
on Linux (see `peak_rss_mb` for why not ru_maxrss alone), ru_maxrss elsewhere; both
are recorded. Anchors that run ffmpeg as a child process also report
getrusage(RUSAGE_CHILDREN).ru_maxrss (ffmpeg's peak).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluation.bench.measure import DECODER_UNNEEDED_MODULES, ENCODER_SIDE_MODULES, peak_rss_mb, ru_maxrss_mb
from evaluation.bench.ops import _op_anchor, _op_decode, _op_decode_set, _op_encode, _op_encode_set
from evaluation.bench.probes import _op_profile_synthesis

# --------------------------------------------------------------------------- entry

OPS: dict[str, Callable[[dict, dict], None]] = {
    "startup_decode": _op_decode, "decode": _op_decode, "profile_synthesis": _op_profile_synthesis,
    "decode_set": _op_decode_set, "encode_set": _op_encode_set,
    "startup_encode": _op_encode, "encode_search": _op_encode, "encode_fixed": _op_encode, "encode_refine": _op_encode,
    "anchor_match": _op_anchor, "anchor_encode": _op_anchor, "anchor_decode": _op_anchor,
}


def run(spec: dict) -> dict:
    """Run one op in this process and return its result (RSS fields describe this process)."""
    res: dict[str, Any] = {"op": spec["op"], "start_epoch": time.time(), "imports": {}, "models_loaded": [],
                           "pid": os.getpid()}
    if spec.get("spawn_epoch"):
        res["interpreter_s"] = res["start_epoch"] - float(spec["spawn_epoch"])
    OPS[spec["op"]](spec, res)
    res["peak_rss_mb"] = peak_rss_mb()
    res["ru_maxrss_mb"] = ru_maxrss_mb(resource.RUSAGE_SELF)
    res["peak_rss_children_mb"] = ru_maxrss_mb(resource.RUSAGE_CHILDREN)
    if spec.get("spawn_epoch") and res.get("ready_epoch"):
        res["startup_s"] = res["ready_epoch"] - float(spec["spawn_epoch"])
    res["encoder_side_modules"] = sorted(m for m in sys.modules
                                         if any(m == p or m.startswith(p + ".") for p in ENCODER_SIDE_MODULES))
    res["unneeded_modules"] = [p for p in DECODER_UNNEEDED_MODULES if p in sys.modules]
    return res


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("python -m evaluation.bench.worker: error: usage: SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    try:
        res = run(spec)
    except Exception as e:  # noqa: BLE001 - reported to the parent as data, never lost
        import traceback
        res = {"op": spec.get("op"), "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
               "peak_rss_mb": peak_rss_mb()}
    Path(argv[1]).write_text(json.dumps(res))
    return 0 if "error" not in res else 1


if __name__ == "__main__":
    sys.exit(main())
