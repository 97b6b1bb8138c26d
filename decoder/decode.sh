#!/usr/bin/env bash
# decoder/decode.sh in.bit out.png   (extra flags pass through to `python -m decoder`)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${RATELOCK_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec "$py" -m decoder "$@"
