"""Golden streams: verify them, or regenerate them on purpose.

  python -m conformance.golden                    # verify conformance/streams against the registry
  python -m conformance.golden --regenerate       # re-encode the crops with the registry's models

Regenerate only when the shipped models change (then commit conformance/streams/).
Into the committed folder, regeneration refuses untrained models unless
--allow-untrained: golden streams made by placeholder weights would pin nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
PROG = "conformance.golden"


def _args(argv: list[str] | None) -> argparse.Namespace:
    from conformance.common import GOLDEN_DIR, KODAK
    p = argparse.ArgumentParser(prog="python -m conformance.golden", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regenerate", action="store_true",
                   help="encode the golden crops with the registry's models and rewrite the streams and expected.json")
    p.add_argument("--registry", default=None,
                   help="model registry YAML (default: $RATELOCK_REGISTRY or models/registry.yaml)")
    p.add_argument("--dir", default=str(GOLDEN_DIR), help=f"golden stream folder (default: {GOLDEN_DIR})")
    p.add_argument("--kodak", default=str(KODAK), help=f"folder holding the Kodak source images (default: {KODAK})")
    p.add_argument("--targets", default=None,
                   help="regeneration targets, comma-separated bpp (default: 0.12,0.5)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="allow regenerating the committed folder from models the registry marks trained: false")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    try:
        from conformance.checks import golden as G
        from conformance.common import GOLDEN_DIR
        from models.runtime import configure
        configure()
        if args.regenerate:
            from models.weights import load_registry
            reg = load_registry(args.registry)
            untrained = sorted({e.name for e in reg.entries if not e.trained})
            if untrained and Path(args.dir).resolve() == GOLDEN_DIR.resolve() and not args.allow_untrained:
                print(f"{PROG}: error: registry {reg.path} has untrained models ({', '.join(untrained)}); refusing to "
                      f"overwrite the committed golden streams (use --allow-untrained or --dir)", file=sys.stderr)
                return 2
            targets = tuple(float(t) for t in args.targets.split(",")) if args.targets else G.TARGETS
            doc = G.generate(args.registry, args.dir, args.kodak, targets=targets)
            total = sum(s["bytes"] for s in doc["streams"])
            for s in doc["streams"]:
                print(f"{s['file']}: {s['bytes']} B, {s['bpp']:.4f} bpp ({s['status']}), model {s['model']} "
                      f"{s['model_hash']}, symbols {s['symbols_sha256_16']}, PSNR {s['psnr_db']:.2f} dB")
            print(f"wrote {len(doc['streams'])} streams ({total} B) and {G.EXPECTED} to {args.dir}")
            return 0
        r = G.verify(args.registry, args.dir, args.kodak)
        for f in r.failures:
            print(f"FAIL {f.where()}: {f.what}")
        for n in r.notes:
            print(f"note: {n}")
        print(f"golden: {'PASS' if r.passed else 'FAIL'}: {r.summary}")
        return 0 if r.passed else 1
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        print(f"{PROG}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
