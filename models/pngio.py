"""Atomic PNG output: a reader never sees a half-written file.

Errors name the path the user gave, never the hidden temp file, and the CLIs check
the destination before the work (an encode can take a minute), so a bad path fails at once.
A file is written to `.<name>.<host>.<pid>.<random>.tmp` beside it, flushed to disk and renamed
over the name, so even a power cut or SIGKILL leaves either the whole file or none; a temp file
left by a killed writer is recognisable and `remove_stale_temps` clears it (models/batch.py).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


class OutputError(OSError):
    """The output cannot be written; the message is one line naming the user's path. `errno` is the
    cause's (ENOSPC, EROFS, ...), so a batch can tell a full or read-only destination from one bad name."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


# Errors of the destination itself: every later file would fail the same way, so a batch stops.
DESTINATION_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")
STALE_SECONDS = 3600          # another host's temp file older than this is a dead writer's


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
        raise OutputError(f"{user_path}: cannot write into folder {folder} ({_reason(e)})", e.errno) from None
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
        raise OutputError(f"{folder}: cannot create output folder ({_reason(e)})", e.errno) from None
    _probe_folder(folder, d)
    return d


def _write_atomic(path: str | os.PathLike, write) -> None:
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({_reason(e)})", e.errno) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())          # the data is on disk before the name points at it
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({_reason(e)})", e.errno) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Remove the temp files killed writers left in folder: this host's whose process is gone, and any
    older than STALE_SECONDS (another machine's, on a shared folder). Returns how many."""
    removed, now = 0, time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        m = _TEMP.fullmatch(e.name)
        if not m or not e.is_file(follow_symlinks=False):
            continue
        try:
            dead = (m["host"] == _HOST and not _alive(int(m["pid"]))) or now - e.stat().st_mtime > STALE_SECONDS
            if dead:
                os.unlink(e.path)
                removed += 1
        except OSError:
            continue
    return removed


def is_temp(name: str) -> bool:
    """Whether a file name is one of these writers' temp files."""
    return _TEMP.fullmatch(name) is not None


def write_png_atomic(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """8-bit RGB PNG via temp file + rename, so an interrupted write leaves nothing behind."""
    _write_atomic(path, lambda f: Image.fromarray(rgb, "RGB").save(f, format="PNG"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Bytes via temp file + rename, so an interrupted write leaves nothing behind."""
    _write_atomic(path, lambda f: f.write(data))
