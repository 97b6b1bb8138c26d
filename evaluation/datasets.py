"""Where the shared data lives: the one owner of these paths.

The project expects ../shared beside the checkout (CI and every session have it);
$RATELOCK_SHARED points elsewhere. A leaf module: it imports nothing of the project,
so the encoder demo, conformance, training and tests may all import it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RATELOCK_SHARED") or ROOT.parent / "shared")
KODAK = SHARED / "data" / "kodak"          # the development test set: never trained on
TRAIN = SHARED / "data" / "train"          # 729 photographs, sources and licences in MANIFEST.tsv
ANCHORS = SHARED / "anchors"
