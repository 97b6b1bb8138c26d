"""The bench worker's operations on our codec and the anchors: decode, decode sets, encodes, anchor codecs.

Only the standard library at module level: numpy, TensorFlow and the codec are imported inside each op and timed."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from evaluation.bench.measure import (
    DECODE_TOP,
    ENCODE_TOP,
    Stages,
    _import_tf,
    _now,
    _stage_medians,
    _summ,
    _with_other,
    current_rss_mb,
)

# --------------------------------------------------------------------------- ours: decode

def _decoder_ready(spec: dict, res: dict):
    _import_tf(res, decoder=True)
    t = _now()
    from models.runtime import configure
    configure(int(spec.get("threads", 0)))
    from decoder import decode as D
    from decoder.bitstream import parse_header
    res["imports"]["codec"] = _now() - t
    res["import_s"] = sum(res["imports"].values())
    import numpy as np
    data = Path(spec["stream"]).read_bytes()
    header = parse_header(data)
    t = _now()
    models = D.ModelCache(spec.get("registry"))
    res["models_loaded"] = models.loaded      # the store's own record of what it loaded (models.weights.ModelStore)
    model = models.get(header)
    res["load_s"] = _now() - t
    res["models_distinct"] = len({e.hash for e in models.registry.entries})
    t = _now()   # first synthesis call on a tiny input (plain TF ops run eagerly: nothing is built or traced)
    D.to_uint8(D.synthesize(model.synthesis, np.zeros((2, 2, model.widths["latent_channels"]), np.float32)), 32, 32)
    res["trace_s"] = _now() - t
    return D, models, data, header


def _op_decode(spec: dict, res: dict) -> None:
    D, models, data, header = _decoder_ready(spec, res)
    res["ready_epoch"] = time.time()
    res["rss_ready_mb"] = current_rss_mb()
    if spec["op"] == "startup_decode":
        return
    st = Stages()
    limits = D.Limits(max_pixels=int(spec.get("max_pixels", 100_000_000)))
    decode = _decode_untiled if spec.get("untiled") else D.decode_bytes
    times, cpu, stages = [], [], []
    out = None
    for _ in range(int(spec["runs"])):
        out = None
        st.reset()
        st.active = True
        t, c = _now(), time.process_time()
        out = decode(data, models, limits, stages=st)
        times.append(_now() - t)
        cpu.append(time.process_time() - c)     # all threads: the work, less sensitive to a loaded machine
        st.active = st.record_mem = False
        stages.append(_with_other(st.acc, times[-1], DECODE_TOP))
    res.update(_summ(times))
    res["times"] = times
    res["cpu_times"], res["cpu_median_s"] = cpu, statistics.median(cpu)
    res["stages"] = _stage_medians(stages)
    res["peak_rss_after_mb"] = dict(st.peak_after)
    res["rss_before_mb"] = dict(st.rss_before)
    res["width"], res["height"] = header.width, header.height
    res["bytes"] = len(data)
    res["out_shape"] = list(out.shape)
    if spec.get("out_npy"):
        import numpy as np
        np.save(spec["out_npy"], out)


def _decode_untiled(data: bytes, models, limits, stages: Stages) -> Any:
    """decode_bytes with the synthesis in one piece (the memory test shows what tiling saves); same stages."""
    from decoder import decode as D
    with stages("parse"):
        parsed = D.parse(data, models, limits, stages)
    model = D.model_for(parsed.header, models)
    with stages("dequantize"):
        y_hat = D.dequantize(parsed)
    with stages("synthesis"):
        x = D.synthesize(model.synthesis, y_hat, tile=1 << 30)
    del y_hat
    with stages("to_uint8"):
        return D.to_uint8(x, parsed.header.width, parsed.header.height)

def _op_decode_set(spec: dict, res: dict) -> None:
    """Streams of the same images from several models, decoded image by image with the models interleaved.

    Interleaving puts every model's decodes of an image at the same moment on a shared machine, so their
    ratio is fair under a changing load. The order of the models alternates from run to run. Wall seconds
    (perf_counter) and CPU seconds (process_time: this process, all its threads) per decode.
    """
    _import_tf(res, decoder=True)
    from models.runtime import configure
    configure(int(spec.get("threads", 0)))
    from decoder import decode as D
    from decoder.bitstream import parse_header
    models = D.ModelCache(spec.get("registry"))
    labels = list(spec["labels"])
    images: dict[str, dict[str, bytes]] = {}
    for s in spec["streams"]:
        images.setdefault(s["image"], {})[s["label"]] = Path(s["path"]).read_bytes()
    per_label: dict[str, dict[str, Any]] = {k: {"stages": []} for k in labels}
    warm: set = set()
    for streams in images.values():               # load each model; warm up each (model, image shape) once
        for label in labels:
            h = parse_header(streams[label])
            if "kmac_per_pixel" not in per_label[label]:
                entry = D.entry_for(h, models)
                per_label[label].update(model=entry.name, version=h.version, kmac_per_pixel=decoder_kmac_per_pixel(
                    models.decoder_model(entry), models.slice_nets(entry)))
            if (label, h.width, h.height) not in warm:
                warm.add((label, h.width, h.height))
                D.decode_bytes(streams[label], models)
    res["rss_ready_mb"] = current_rss_mb()
    st = Stages()
    st.record_mem = False
    rows = []
    for name, streams in images.items():
        h = parse_header(streams[labels[0]])
        row: dict[str, Any] = {"image": name, "width": h.width, "height": h.height}
        for k in labels:
            row[k] = {"bytes": len(streams[k]), "bpp": 8.0 * len(streams[k]) / (h.width * h.height),
                      "wall_s": [], "cpu_s": []}
        for r in range(int(spec["runs"])):
            for k in (labels if r % 2 == 0 else labels[::-1]):
                st.reset()
                st.active = True
                t, c = _now(), time.process_time()
                D.decode_bytes(streams[k], models, stages=st)
                wall, cpu = _now() - t, time.process_time() - c
                st.active = False
                row[k]["wall_s"].append(wall)
                row[k]["cpu_s"].append(cpu)
                per_label[k]["stages"].append(_with_other(st.acc, wall, DECODE_TOP))
        rows.append(row)
    res["images"] = rows
    res["labels"] = {}
    for k in labels:
        wall = [statistics.median(r[k]["wall_s"]) for r in rows]
        cpu = [statistics.median(r[k]["cpu_s"]) for r in rows]
        res["labels"][k] = {**{x: v for x, v in per_label[k].items() if x != "stages"},
                            "median_wall_s": statistics.median(wall), "median_cpu_s": statistics.median(cpu),
                            "min_wall_s": min(wall), "max_wall_s": max(wall),
                            "mean_bpp": statistics.fmean(r[k]["bpp"] for r in rows),
                            "stages": _stage_medians(per_label[k]["stages"])}
    res["median_s"] = statistics.median(sum(statistics.median(r[k]["wall_s"]) for k in labels) for r in rows)


def _op_encode_set(spec: dict, res: dict) -> None:
    """Each image (PNG) with each named model (label -> target index) at one delta code; streams to out_dir."""
    _import_tf(res)
    from encoder.api import Encoder
    from encoder.imageio import load_rgb8
    enc = Encoder(spec.get("registry"))
    entries = enc.models.distinct_entries()
    index = {k: next(i for i, e in enumerate(entries) if e.target_index == int(ti))
             for k, ti in spec["models"].items()}
    code, out_dir = int(spec["delta_code"]), Path(spec["out_dir"])
    res["streams"] = []
    t = _now()
    for img in spec["images"]:
        rgb = load_rgb8(img)
        for k, mi in index.items():
            path = out_dir / f"{Path(img).stem}.{k}.rlk"
            data = enc.encode_fixed(rgb, mi, code)
            path.write_bytes(data)
            res["streams"].append({"image": Path(img).name, "label": k, "path": str(path), "bytes": len(data),
                                   "bpp": 8.0 * len(data) / (rgb.shape[0] * rgb.shape[1])})
    res["median_s"] = res["seconds"] = _now() - t
    res["models"] = {k: entries[i].name for k, i in index.items()}


# --------------------------------------------------------------------------- ours: encode

def _op_encode(spec: dict, res: dict) -> None:
    _import_tf(res)
    t = _now()
    from encoder.api import Encoder
    res["imports"]["codec"] = _now() - t
    res["import_s"] = sum(res["imports"].values())
    import numpy as np
    rgb = np.load(spec["image"]) if spec.get("image") else None
    op = spec["op"]
    t = _now()
    enc = Encoder(spec.get("registry"), refine=int(spec.get("refine", 0)))
    res["models_loaded"] = enc.models.loaded  # the store's own record of what it loaded (models.weights.ModelStore)
    entries = enc.models.distinct_entries()
    res["models_distinct"] = len(entries)
    res["init_s"] = _now() - t

    def model_index() -> int:
        ti = spec.get("target_index")
        if ti is None:
            return 0
        return next((i for i, e in enumerate(entries) if e.target_index == ti), 0)

    mi, code = model_index(), int(spec.get("delta_code", 128))
    tiny = np.ascontiguousarray(np.full((64, 64, 3), 128, np.uint8) if rgb is None else rgb[:64, :64])
    t = _now()   # load the model(s) and trace the tf.functions on a tiny image
    if op in ("encode_search", "encode_refine"):
        enc.encode(tiny, float(spec["target"]))
    else:
        enc.encode_fixed(tiny, mi, code)
    res["load_trace_s"] = _now() - t
    res["ready_epoch"] = time.time()
    res["rss_ready_mb"] = current_rss_mb()
    res["models_loaded_at_ready"] = len(res["models_loaded"])
    if op == "startup_encode":
        return

    st = Stages()
    # The encoder's own hook (models/stages.py): "analysis" (g_a, h_a, z coding, integer h_s) with
    # "analysis.g_a" and "analysis.hyper_synthesis_int" inside it, "code" per rate probe (quantise,
    # range-code y, pack), "range_encode" (z and y) and "reconstruct" (to compare in-band candidates).
    enc.models.stages = st
    times, stages, data = [], [], b""
    for _ in range(int(spec["runs"])):
        st.reset()
        st.active = True
        t = _now()
        if op in ("encode_search", "encode_refine"):
            c = enc.encode(rgb, float(spec["target"]))
            data = bytes(c.data)
            info = {"model": c.model, "target_index": c.target_index, "delta_code": c.delta_code,
                    "within_band": bool(c.within_band), "probes": int(c.probes), "analyses": int(c.analyses)}
            if c.refinement is not None:
                info["refine_db"] = c.refinement.gain_db
        else:
            data = bytes(enc.encode_fixed(rgb, mi, code))
            info = {"model": entries[mi].name, "target_index": entries[mi].target_index, "delta_code": code,
                    "probes": 1, "analyses": 1}
        times.append(_now() - t)
        st.active = st.record_mem = False
        stages.append(_with_other(st.acc, times[-1], ENCODE_TOP))
    res.update(_summ(times))
    res.update(info)
    res["times"] = times
    res["stages"] = _stage_medians(stages)
    res["height"], res["width"] = rgb.shape[:2]
    res["bytes"] = len(data)
    res["bpp"] = 8.0 * len(data) / (rgb.shape[0] * rgb.shape[1])
    if spec.get("stream_out"):
        Path(spec["stream_out"]).write_bytes(data)


# --------------------------------------------------------------------------- anchors

def _op_anchor(spec: dict, res: dict) -> None:
    t = _now()
    import numpy as np

    from evaluation import codecs
    res["imports"]["codec"] = _now() - t
    res["import_s"] = res["imports"]["codec"]
    codec = codecs.make(spec["codec"])
    why = codec.unavailable()
    if why:
        raise RuntimeError(f"{spec['codec']} unavailable: {why}")
    res["version"] = codec.version()
    knob = float(spec["knob"])
    tiny = np.full((64, 64, 3), 128, np.uint8)
    t = _now()
    codec.decode(codec.encode(tiny, knob), 64, 64)     # library / binary discovery, page cache
    res["load_trace_s"] = _now() - t
    res["rss_ready_mb"] = current_rss_mb()
    times = []
    if spec["op"] == "anchor_match":   # rate-match the knob to spec["target"] (untimed set-up step)
        from evaluation.ratematch import TrialCache, match_rate
        rgb = np.load(spec["image"])
        h, w = rgb.shape[:2]
        t = _now()
        cache = TrialCache(lambda k: codec.encode(rgb, k), w, h)
        m = match_rate(cache, codec.knob, float(spec["target"]))
        res.update({"knob": m.knob, "bpp": m.bpp, "within_band": m.within_band, "calls": cache.calls,
                    "search_s": _now() - t, "height": h, "width": w})
        return
    if spec["op"] == "anchor_encode":
        rgb = np.load(spec["image"])
        h, w = rgb.shape[:2]
        data = b""
        for _ in range(int(spec["runs"])):
            t = _now()
            data = codec.encode(rgb, knob)
            times.append(_now() - t)
        Path(spec["stream_out"]).write_bytes(data)
    else:
        data = Path(spec["stream"]).read_bytes()
        h, w = int(spec["height"]), int(spec["width"])
        for _ in range(int(spec["runs"])):
            t = _now()
            out = codec.decode(data, h, w)
            times.append(_now() - t)
        res["out_shape"] = list(out.shape)
    res.update(_summ(times))
    res["times"] = times
    res["knob"] = knob
    res["height"], res["width"] = h, w
    res["bytes"] = len(data)
    res["bpp"] = 8.0 * len(data) / (h * w)


def _step_macs(kind: str, wshape: tuple, out_shape) -> float:
    """Multiply-accumulates of one synthesis step (stride-2 transposed conv: k*k/4 taps per output; GDN: C*C)."""
    n, h, w, c = (int(v) for v in out_shape)
    if kind == "deconv":
        kh, kw, a, b = wshape
        return float(h * w * kh * kw * a * b) / 4
    if kind == "igdn":
        return float(h * w * c * c)
    return 0.0


def decoder_kmac_per_pixel(model, slices=None) -> dict[str, float]:
    """The decoder's multiply-accumulates per image pixel, in thousands (the complexity figure of the JPEG AI call).

    synthesis: g_s's transposed convolutions (k*k/4 taps per output position at stride 2) and inverse GDNs
    (C*C), counted as `_step_macs` counts them, from y (1/16 of the image side) up; hyper_synthesis_int: the
    integer h_s from z (1/64) to y; slice_nets: bitstream v3's slice networks (models.charm.IntCharm), 0 for v2.
    """
    syn, f = 0.0, 1.0 / 16
    for _, kind, wshape, _ in model.synthesis.steps():
        if kind == "deconv":
            f *= 2
            kh, kw, a, b = wshape
            syn += f * f * kh * kw * a * b / 4
        elif kind == "igdn":
            syn += f * f * wshape[0] * wshape[1]
    hs, f = 0.0, 1.0 / 64
    for layer in model.intnet.layers:
        kh, kw, cin, cout = layer.weight.shape
        s = layer.stride if layer.kind == "deconv" else 1
        f *= s
        hs += f * f * kh * kw * cin * cout / (s * s)
    out = {"synthesis": syn / 1e3, "hyper_synthesis_int": hs / 1e3,
           "slice_nets": slices.macs_per_pixel() / 1e3 if slices is not None else 0.0}
    out["total"] = sum(out.values())
    return out
