#!/usr/bin/env bash
# decoder/decode.sh in.bit out.png   (extra flags pass through to `python -m decoder`)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
me="decoder/decode.sh" reqs="decoder/requirements.txt"
source "$root/models/python.sh"   # sets $py (or exits 3 with one line) and PYTHONPATH
exec "$py" -m decoder "$@"
