#!/usr/bin/env bash
# The accelerator runbook (training/README.md), one verb per step:
#   training/device.sh aside                  here: delete the tracked weight files so the tree travels (< 64 MiB)
#   on the device: bash training/device.sh train CONFIG SECONDS [extra training.train flags]  (device-pack/ travels in;
#   the JAX step: the CPU dry run of the runbook exercises the code the accelerator runs)
#   training/device.sh restore                here: put the weight files back (git checkout)
#   training/device.sh import DIR NAME        here: returned files -> runs/NAME/ckpt + models/checkpoints/NAME.npz
# PACK (default device-pack, built by `python -m training.device_pack`) and OUT (the folder whose files come
# back from the device; default runs/device) may be set in the environment; PYTHON defaults to python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
aside=(models/weights models/checkpoints)
die() { echo "device.sh: error: $*" >&2; exit 2; }
py="${PYTHON:-python3}"
pack="${PACK:-device-pack}"
case "${1:-}" in
  aside)
    git diff --quiet -- "${aside[@]}" || die "tracked weight files are modified; commit them before setting them aside"
    git ls-files -z -- "${aside[@]}" | xargs -0 rm -f
    echo "set aside: $(git ls-files -- "${aside[@]}" | wc -l) tracked weight files (restore: training/device.sh restore)" ;;
  restore)
    git checkout -- "${aside[@]}"
    echo "restored: $(git ls-files -- "${aside[@]}" | wc -l) tracked weight files" ;;
  train)
    [ $# -ge 3 ] || die "usage: training/device.sh train CONFIG SECONDS [flags]"
    cfg="$2"; secs="$3"; shift 3
    out="${OUT:-runs/device}"
    mkdir -p "$out"
    [ -d "$pack/train" ] || die "no $pack/train: build it with python -m training.device_pack and send it with the tree"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    "$py" -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
    resume=()
    [ -f "$pack/run/ckpt/meta.json" ] && resume=(--resume "$pack/run/ckpt")
    kodak=()
    [ -d "$pack/kodak" ] && kodak=(--kodak "$pack/kodak")
    PYTHONUNBUFFERED=1 PYTHONPATH="$root" exec "$py" -m training.train --config "$cfg" --out "$out" \
      --state-dir "$pack/state" "${kodak[@]}" "${resume[@]}" --set "train_dir=$pack/train" \
      --set rate_probe=estimated --backend jax --max-seconds "$secs" --no-export --no-progress --log-every 200 \
      --checkpoint-seconds 120 --curve-seconds 30 "$@" ;;
  import)
    [ $# -eq 3 ] || die "usage: training/device.sh import DIR NAME"
    PYTHONPATH="$root" exec "$py" -m training.checkpoint import "$2" --name "$3" ;;
  *) die "usage: training/device.sh aside|restore|train CONFIG SECONDS|import DIR NAME" ;;
esac
