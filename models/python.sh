# Sourced by encoder/encode.sh and decoder/decode.sh (set root, me, reqs first): picks the interpreter into $py.
# The project's .venv interpreter, or $RATELOCK_PYTHON when set. No silent fallback to another python3: that
# only fails later with "No module named 'tensorflow'". Exits 3 with one line otherwise.
if [ -n "${RATELOCK_PYTHON:-}" ]; then
  py="$RATELOCK_PYTHON"
  if ! command -v "$py" >/dev/null 2>&1; then
    echo "$me: RATELOCK_PYTHON=$py is not an executable; unset it to use $root/.venv" >&2; exit 3
  fi
else
  py="$root/.venv/bin/python"
  if ! "$py" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("tensorflow") is None)' >/dev/null 2>&1; then
    if [ ! -e "$root/.venv" ]; then why="no $root/.venv"; fix="make install"
    elif [ ! -e "$py" ]; then why="$py is missing"; fix="rm -rf .venv && make install"
    else why="$py cannot run or lacks tensorflow"; fix="rm -rf .venv && make install"; fi
    echo "$me: $why: run '$fix' in $root (or set RATELOCK_PYTHON to a Python with $reqs installed)" >&2
    exit 3
  fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
