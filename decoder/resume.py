"""Which PNGs of a `--dir` batch are already done, so a re-run decodes only the rest.

Cheap on purpose (a resumed batch of 20,000 streams checks 20,000 files): the PNG's chunks must all be
there with good CRCs (Pillow's verify, no pixel decoding) and its size must be the one the stream's
header gives. PNGs are only ever written whole (models/pngio.py), so this catches a file some other
tool left, not one of ours.
"""

from __future__ import annotations

from pathlib import Path

from decoder.bitstream import FIXED, BitstreamError, parse_header


def decoded_already(stream: Path, png: Path) -> bool:
    """True if png is a complete PNG of the size stream's header says."""
    if not png.is_file():
        return False
    try:
        with stream.open("rb") as f:
            header = parse_header(f.read(FIXED + 16))
    except (OSError, BitstreamError):
        return False
    from PIL import Image
    try:
        with Image.open(png) as im:
            size = im.size
            im.verify()
    except Exception:  # noqa: BLE001 - any reason a PNG does not read is "not done"
        return False
    return size == (header.width, header.height)
