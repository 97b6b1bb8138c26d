"""The command-line contract shared by every tool: one line on error, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def one_line_errors(prog: str, body: Callable[[], int], status: int = 1) -> int:
    """Run a CLI body; any exception becomes `prog: error: <first line>` and exit `status` (1 by default).

    Set RATELOCK_DEBUG=1 to get the traceback instead.
    """
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the contract is one line, never a traceback
        if os.environ.get("RATELOCK_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return status
