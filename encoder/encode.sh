#!/usr/bin/env bash
# encoder/encode.sh in.png TARGET_BPP out.bit   (extra flags pass through to `python -m encoder`)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
me="encoder/encode.sh" reqs="requirements.txt"
source "$root/models/python.sh"   # sets $py (or exits 3 with one line) and PYTHONPATH
exec "$py" -m encoder "$@"
