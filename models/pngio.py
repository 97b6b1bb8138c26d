"""Atomic PNG output: a reader never sees a half-written file.

Errors name the path the user gave, never the hidden temp file, and the CLIs check
the destination before the work (an encode can take a minute), so a bad path fails at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


class OutputError(OSError):
    """The output cannot be written; the message is one line naming the user's path."""


def _umask_mode() -> int:
    """0666 minus the process umask: what open() would have given (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def _probe_folder(user_path: str | os.PathLike, folder: Path) -> None:
    """Create and remove a temp file in folder: the only check that holds for root and read-only mounts."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ratelock-probe.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(f"{user_path}: cannot write into folder {folder} ({_reason(e)})") from None
    os.close(fd)
    os.unlink(tmp)


def check_writable(path: str | os.PathLike) -> None:
    """Refuse an output file that could not be written, before any encoding or decoding is done."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{path}: is a folder; give an output file name")
    parent = p.absolute().parent
    if not parent.is_dir():
        raise OutputError(f"{path}: output folder {parent} does not exist")
    _probe_folder(path, parent)


def ensure_output_dir(folder: str | os.PathLike) -> Path:
    """Create an output folder (batch modes) and prove it takes files, before any work is done."""
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create output folder ({_reason(e)})") from None
    _probe_folder(folder, d)
    return d


def _write_atomic(path: str | os.PathLike, write) -> None:
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({_reason(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({_reason(e)})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_png_atomic(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """8-bit RGB PNG via temp file + rename, so an interrupted write leaves nothing behind."""
    _write_atomic(path, lambda f: Image.fromarray(rgb, "RGB").save(f, format="PNG"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Bytes via temp file + rename, so an interrupted write leaves nothing behind."""
    _write_atomic(path, lambda f: f.write(data))
