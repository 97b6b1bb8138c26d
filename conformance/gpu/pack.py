"""Build the GPU parity pack: parse here with the TF decoder, pack what the synthesis needs to travel.

  python -m conformance.gpu.pack [--out gpu-pack] [--targets 0.25,1.0] [--no-kodak] [--no-big]

Streams: the golden streams, the 24 Kodak images encoded at each target (rate-controlled, as
`python -m encoder`; cached in runs/gpu-pack-streams/ and re-encoded only when the registry's
model changed), and one 4K image (Kodak kodim23 cropped to 16:9 and upscaled to 3840x2160)
coded with the target's model at the training step (delta code 128), for timing.

Each stream carries its bytes (gpu_compare decodes them here again), the parse's integers
(symbols + mu_q, or v3's y_hat_q; compacted to the smallest int dtype), the symbol hash of the
parse, and hashes of the carried integers and of y_hat; each model used carries its synthesis
weights (fp16, as in the .dec.npz). The pack must travel to the device with the tree (64 MiB in
all, weights set aside by `training/device.sh aside`): it refuses to exceed --limit-mib.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from conformance.gpu import format as F  # noqa: E402
from models.cli import ArgumentParser, one_line_errors  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROG = "python -m conformance.gpu.pack"
CACHE = ROOT / "runs" / "gpu-pack-streams"
BIG_SIZE = (3840, 2160)
BIG_DELTA_CODE = 128


def _args(argv: list[str] | None) -> argparse.Namespace:
    from evaluation.datasets import KODAK
    p = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "gpu-pack"), help="pack folder (default gpu-pack/, git-ignored)")
    p.add_argument("--golden-dir", default=str(ROOT / "conformance" / "streams"))
    p.add_argument("--golden-limit", type=int, default=0, help="first N golden streams only (0 = all)")
    p.add_argument("--kodak", default=str(KODAK), help="Kodak folder (default ../shared/data/kodak)")
    p.add_argument("--no-kodak", action="store_true", help="skip the Kodak streams (tests)")
    p.add_argument("--targets", default="0.25,1.0", help="Kodak targets, bpp (default 0.25,1.0)")
    p.add_argument("--big-image", default=None, help="source of the timing image (default <kodak>/kodim23.png)")
    p.add_argument("--big-size", default="3840x2160", help="timing image size WxH (default 3840x2160)")
    p.add_argument("--big-target", type=float, default=0.25, help="its model's target (default 0.25)")
    p.add_argument("--no-big", action="store_true", help="skip the timing image")
    p.add_argument("--registry", default=None)
    p.add_argument("--cache", default=str(CACHE), help="encoded Kodak streams (default runs/gpu-pack-streams)")
    p.add_argument("--limit-mib", type=float, default=55.0, help="refuse a bigger pack (default 55)")
    return p.parse_args(argv)


def _big_rgb(src: Path, size: tuple[int, int]) -> np.ndarray:
    """A center crop of src with size's aspect ratio, resized (bicubic) to size."""
    from PIL import Image

    from encoder.imageio import load_rgb8
    rgb = load_rgb8(src)
    h, w = rgb.shape[:2]
    tw, th = size
    if w * th > h * tw:
        cw, ch = h * tw // th, h
    else:
        cw, ch = w, w * th // tw
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    im = Image.fromarray(rgb[y0:y0 + ch, x0:x0 + cw]).resize(size, Image.BICUBIC)
    return np.asarray(im, np.uint8)


def _kodak_streams(enc, kodak: Path, targets: list[float], cache: Path) -> list[tuple[str, str, bytes]]:
    """(name, kind, bytes) for every Kodak image x target; a cached stream is reused if it still parses."""
    from decoder import decode as D
    from encoder.imageio import image_paths, load_rgb8
    paths = image_paths(kodak)
    if not paths:
        raise F.PackError(f"{kodak}: no Kodak images (set --kodak or $RATELOCK_SHARED, or pass --no-kodak)")
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        for t in targets:
            name = f"kodak-{p.stem}-t{round(t * 100):03d}"
            f = cache / f"{name}.bit"
            data = f.read_bytes() if f.is_file() else None
            if data is not None:
                try:
                    D.parse(data, enc.models)
                except D.DecodeError:
                    data = None                    # the registry's model changed: encode again
            if data is None:
                t0 = time.perf_counter()
                c = enc.encode(load_rgb8(p), t)
                data = c.data
                f.write_bytes(data)
                print(f"  encoded {name}: {c.bpp:.4f} bpp, model {c.model}, {time.perf_counter() - t0:.1f} s",
                      flush=True)
            out.append((name, "kodak", data))
    return out


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def travelling_tree_bytes() -> int:
    """What the tree adds to the 64 MiB: tracked files outside the weights set aside, plus untracked
    files git does not ignore (training/device.sh aside removes models/weights and models/checkpoints)."""
    try:
        ls = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, timeout=30).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):
        return 0
    aside = ("models/weights/", "models/checkpoints/")
    total = 0
    for rel in ls:
        if rel and not rel.startswith(aside):
            p = ROOT / rel
            if p.is_file():
                total += p.stat().st_size
    return total


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def build(args: argparse.Namespace) -> dict:
    from decoder import decode as D
    from encoder.api import Encoder
    from models.targets import TARGETS, parse_targets

    golden = sorted(Path(args.golden_dir).glob("*.bit"))
    if args.golden_limit:
        golden = golden[:args.golden_limit]
    streams: list[tuple[str, str, bytes]] = [(f"golden-{p.stem}", "golden", p.read_bytes()) for p in golden]
    enc = Encoder(args.registry)
    if not args.no_kodak:
        targets = parse_targets(args.targets)
        streams += _kodak_streams(enc, Path(args.kodak), targets, Path(args.cache))
    if not args.no_big:
        try:
            bw, bh = (int(v) for v in args.big_size.lower().split("x"))
        except ValueError:
            raise F.PackError(f"--big-size {args.big_size!r}: expected WxH, e.g. 3840x2160") from None
        src = Path(args.big_image) if args.big_image else Path(args.kodak) / "kodim23.png"
        if not src.is_file():
            raise F.PackError(f"{src}: no such image for the timing stream (--big-image, or --no-big)")
        entry = enc.models.registry.by_target(TARGETS.index(args.big_target))
        t0 = time.perf_counter()
        data = enc.models.encoder_model(entry).analyse(_big_rgb(src, (bw, bh))).code(BIG_DELTA_CODE,
                                                                                      entry.target_index)
        print(f"  encoded big-{bw}x{bh}: {len(data) * 8 / (bw * bh):.4f} bpp, model {entry.name}, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        streams.append((f"big-{src.stem}-{bw}x{bh}", "big", data))
    if not streams:
        raise F.PackError("nothing to pack: no golden streams and --no-kodak --no-big")

    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "streams").mkdir(parents=True)
    (tmp / "models").mkdir()
    manifest: dict = {"format": F.FORMAT, "git": _git_head(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                      time.gmtime()), "models": {}, "streams": []}
    for name, kind, data in streams:
        try:
            parsed = D.parse(data, enc.models)
        except D.DecodeError as e:
            raise F.PackError(f"{name}: {e}") from None
        h = parsed.header
        entry = enc.models.registry.by_target(h.target_index)
        model = enc.models.decoder_model(entry)
        if entry.hash not in manifest["models"]:
            arrays = F.load_npz(entry.dec_path)
            syn = {k: v for k, v in arrays.items() if k.startswith("syn") and k[3:].isdigit()}
            np.savez_compressed(tmp / "models" / f"{entry.hash}.npz", **syn)
            manifest["models"][entry.hash] = {"name": entry.name, "file": f"models/{entry.hash}.npz",
                                              "num_filters": model.widths["num_filters"],
                                              "latent_channels": model.widths["latent_channels"]}
        if parsed.y_hat_q is not None:
            arrays = {"y_hat_q": F.compact(parsed.y_hat_q)}
        else:
            arrays = {"symbols": F.compact(parsed.symbols), "mu_q": F.compact(parsed.mu_q)}
        np.savez_compressed(tmp / "streams" / f"{name}.npz", **arrays)
        (tmp / "streams" / f"{name}.bit").write_bytes(data)
        manifest["streams"].append({
            "name": name, "kind": kind, "width": h.width, "height": h.height, "version": h.version,
            "target": TARGETS[h.target_index], "delta_code": h.delta_code, "model": entry.hash,
            "model_name": entry.name, "bytes": len(data), "bpp": len(data) * 8 / (h.width * h.height),
            "symbol_hash": parsed.symbol_hash(), "payload_hash": F.payload(arrays),
            "y_hat_hash": F.float_hash(D.dequantize(parsed)),
            "file": f"streams/{name}.npz", "stream": f"streams/{name}.bit"})
    (tmp / F.MANIFEST).write_text(json.dumps(manifest, indent=1))
    size = _dir_bytes(tmp)
    by = {k: sum(p.stat().st_size for p in (tmp / k).iterdir()) for k in ("streams", "models")}
    tree = travelling_tree_bytes()
    print(f"pack: {len(manifest['streams'])} streams, {len(manifest['models'])} models; "
          f"{size / F.MiB:.1f} MiB (streams {by['streams'] / F.MiB:.1f}, synthesis weights {by['models'] / F.MiB:.1f}); "
          f"tree without weights {tree / F.MiB:.1f} MiB; travels {(size + tree) / F.MiB:.1f} of 64 MiB", flush=True)
    if size > args.limit_mib * F.MiB:
        shutil.rmtree(tmp, ignore_errors=True)
        raise F.PackError(f"pack is {size / F.MiB:.1f} MiB, over the {args.limit_mib:g} MiB limit "
                          f"(the tree and the pack travel together, 64 MiB in all): pack fewer streams")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    manifest["size_bytes"] = size
    return manifest


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    return one_line_errors(PROG, lambda: _main(args), status=2)


def _main(args) -> int:
    m = build(args)
    print(f"wrote {args.out} ({m['size_bytes'] / F.MiB:.1f} MiB): copy it into the device machine "
          f"(conformance/README.md, 'GPU parity on the lent accelerator')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
