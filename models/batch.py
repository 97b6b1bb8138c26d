"""What every batch command shares (decoder --dir, encoder DIR, evaluation, conformance).

A batch of 20,000 streams must not be lost to one bad stream, a kill or a full disk:
- one bad item is one line on stderr, the batch goes on, and the end says "N of M ... failed";
- a full or read-only destination stops the batch with one line (every later file would fail too);
- outputs are written whole or not at all (models/pngio.py), so after SIGKILL only complete files
  exist, and SIGTERM stops between two files (the one being written is finished or removed);
- re-running the same command resumes: the caller keeps outputs that are already there and valid;
- `--shard K/N` gives each of N machines a deterministic share of the same work.

Standard library only at module level (the decoder container ships models/).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from models.pngio import DESTINATION_ERRNOS, OutputError

T = TypeVar("T")
SIGTERM_STATUS = 128 + signal.SIGTERM          # what a shell reports for a process ended by SIGTERM


class Fatal(Exception):
    """An error that stops the batch (every later item would fail the same way); one line."""


class Stopped(BaseException):
    """SIGTERM arrived; raised where the batch is, so a file being written is removed (a BaseException,
    so no per-item `except Exception` takes it for a bad item)."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `Stopped` for the duration (main thread only; elsewhere a no-op)."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)     # a second SIGTERM must not cut the clean-up short
        raise Stopped()
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:                       # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass(frozen=True)
class Shard:
    """Share K of N (K from 0): of the items sorted by a stable key, those at positions i with i % N == K."""

    k: int = 0
    n: int = 1

    def take(self, items: Iterable[T], key: Callable[[T], str]) -> list[T]:
        ordered = sorted(items, key=key)
        return [x for i, x in enumerate(ordered) if i % self.n == self.k]

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    @property
    def whole(self) -> bool:
        return self.n == 1


def parse_shard(text: str) -> Shard:
    """'K/N' with 0 <= K < N; argparse type (a bad value is a one-line usage error)."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise argparse.ArgumentTypeError(f"need 0 <= K < N, got {text!r}")
    return Shard(k, n)


def add_shard_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--shard", type=parse_shard, default=Shard(), metavar="K/N",
                        help=f"only share K of N (K from 0) of the {what}, sorted by name, every N-th from the "
                             f"K-th: N machines with K = 0..N-1 do the whole set once (e.g. a Slurm array)")


def destination_error(e: BaseException) -> bool:
    """True for an error of the output folder itself (full, read-only, not ours), or a Fatal one: the batch
    must stop."""
    return isinstance(e, Fatal) or isinstance(e, OutputError) and e.errno in DESTINATION_ERRNOS


class Batch:
    """Runs items one by one and keeps the batch's account: one stderr line per failed item, then the
    summary and the exit status (`finish`). The progress bar shows only on a terminal."""

    def __init__(self, prog: str, total: int, noun: str = "streams", desc: str = "", unit: str = "stream",
                 units: int | None = None):
        """total items (named `noun` in the summary); `units`: the bar's total when an item is several units
        (an encoder image is one stream per target)."""
        self.prog, self.total, self.noun = prog, total, noun
        self.failed: list[str] = []
        self.done = self.kept = 0
        from tqdm import tqdm
        self.bar = tqdm(total=units or total, desc=desc or noun, unit=unit, file=sys.stderr, disable=None,
                        leave=False, dynamic_ncols=True, mininterval=0.5)

    def say(self, line: str) -> None:
        """A line on stderr that does not tear the progress bar."""
        self.bar.write(line, file=sys.stderr)

    def fail(self, name: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else (str(error).splitlines() or [type(error).__name__])[0]
        self.failed.append(name)
        self.say(f"{self.prog}: {name}: {text}")

    def run(self, items: Iterable[T], name: Callable[[T], str], work: Callable[[T], bool | None],
            weight: int = 1) -> None:
        """work(item) for each item; it returns False when it kept an existing output (resume). Any
        Exception is that item's failure, except a destination error, which stops the batch (raised)."""
        for item in items:
            try:
                kept = work(item) is False
            except Exception as e:  # noqa: BLE001 - one bad item never stops a batch
                if destination_error(e):
                    self.bar.close()
                    raise
                self.fail(name(item), e)
            else:
                self.done += 1
                self.kept += kept
            self.bar.update(weight)

    def finish(self, failed_status: int = 1) -> int:
        """Close the bar; if any item failed, say 'N of M <noun> failed' and return failed_status, else 0."""
        self.bar.close()
        if self.failed:
            print(f"{self.prog}: {len(self.failed)} of {self.total} {self.noun} failed", file=sys.stderr)
            return failed_status
        return 0

    def stopped(self) -> int:
        """After SIGTERM: say how far it got and how to go on; the status a SIGTERM-ended process has."""
        self.bar.close()
        print(f"{self.prog}: stopped by SIGTERM after {self.done + len(self.failed)} of {self.total} {self.noun}; "
              f"run the same command again to resume", file=sys.stderr)
        return SIGTERM_STATUS
