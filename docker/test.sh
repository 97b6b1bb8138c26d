#!/usr/bin/env bash
# docker/test.sh: build the CPU decoder image and check it decodes exactly like the host decoder.
#
#  1. docker/lint.sh (hadolint both Dockerfiles; copied models/ modules == the decoder's imports);
#  2. docker build -f docker/Dockerfile (prints build time and image size);
#  3. checks the image: non-root user, only decoder files (no encoder, training code, tests, *.enc.npz);
#  4. decodes the golden streams conformance/streams/*.bit (or, if there are none, streams this
#     script encodes with the host encoder from Kodak crops at a few targets) in the container with
#     --network=none --read-only, as a folder and as a single file (the latter also with --ipc=none,
#     i.e. no writable /dev/shm either), and compares every PNG byte for byte with the host decoder's.
# Exit status is non-zero on any difference.
#
# Without models/registry.yaml (no trained models yet) it builds from a scratch context holding a tiny
# random-init model exported by training.export, and uses self-encoded streams.
# Environment: RATELOCK_DOCKER_IMAGE (tag, default ratelock-decoder:test), RATELOCK_DOCKER_NO_CACHE=1
# (build without the layer cache), RATELOCK_PYTHON (host python, default .venv/bin/python),
# RATELOCK_KODAK (folder of Kodak PNGs, default ../shared/data/kodak, else the bundled samples/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
image="${RATELOCK_DOCKER_IMAGE:-ratelock-decoder:test}"
py="${RATELOCK_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
kodak="${RATELOCK_KODAK:-$root/../shared/data/kodak}"
export PYTHONPATH="$root" TF_CPP_MIN_LOG_LEVEL=3
say() { echo "[docker/test] $*"; }
die() { echo "[docker/test] FAIL: $*" >&2; exit 1; }

docker/lint.sh

work="$(mktemp -d "${TMPDIR:-/tmp}/ratelock-docker-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# ---- build context and registry --------------------------------------------------------------
ctx="$root"
registry="$root/models/registry.yaml"
if [ ! -f "$registry" ]; then
  say "no models/registry.yaml: building from a scratch context with a tiny random-init model"
  ctx="$work/ctx"
  mkdir -p "$ctx/models"
  cp -r decoder docker .dockerignore "$ctx/"
  cp models/*.py "$ctx/models/"
  "$py" -m training.export --name tiny --num-filters 8 --latent-channels 8 --out-dir "$ctx/models/weights" \
    --register all --registry "$ctx/models/registry.yaml" >/dev/null 2>&1 || die "training.export failed"
  registry="$ctx/models/registry.yaml"
fi

# ---- build ------------------------------------------------------------------------------------
build_args=(--network=host -f "$ctx/docker/Dockerfile" -t "$image")
[ "${RATELOCK_DOCKER_NO_CACHE:-0}" = 1 ] && build_args+=(--no-cache)
t0=$(date +%s)
docker build -q "${build_args[@]}" "$ctx" >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; die "docker build"; }
t1=$(date +%s)
size=$(docker image inspect -f '{{.Size}}' "$image")
say "image $image: $(awk -v b="$size" 'BEGIN{printf "%.2f GB (%d bytes)", b/1e9, b}'), build $((t1 - t0)) s$(
  [ "${RATELOCK_DOCKER_NO_CACHE:-0}" = 1 ] || echo ' (layer cache allowed; RATELOCK_DOCKER_NO_CACHE=1 for a clean build)')"

# ---- image contents ---------------------------------------------------------------------------
# decoder/ and models/ are copied by folder: any module of theirs, the registry and decoder halves only.
user=$(docker image inspect -f '{{.Config.User}}' "$image")
case "$user" in ""|root|0|0:*|root:*) die "image runs as root (USER '$user')";; esac
docker run --rm --network=none --entrypoint find "$image" /opt/ratelock -type f -not -name '*.pyc' >"$work/files"
if grep -vE '^/opt/ratelock/(entrypoint\.py|decoder/[^/]+|models/[^/]+\.py|models/registry\.yaml|models/weights/[^/]+\.dec\.npz)$' "$work/files"; then
  die "unexpected files in the image (above)"
fi
docker run --rm --network=none --entrypoint find "$image" / -xdev -name '*.enc.npz' 2>/dev/null \
  | grep . && die "encoder weights in the image (above)"
say "image runs as user $user; /opt/ratelock holds $(wc -l <"$work/files") files: decoder, decode-side models/, registry, *.dec.npz"

# ---- streams ----------------------------------------------------------------------------------
in="$work/in"
mkdir -p "$in"
shopt -s nullglob
golden=(conformance/streams/*.bit conformance/streams/*.bits)
if [ "$ctx" = "$root" ] && [ ${#golden[@]} -gt 0 ]; then
  cp "${golden[@]}" "$in/"
  say "streams: ${#golden[@]} golden streams from conformance/streams"
  # plus one full-size Kodak image at every challenge target, encoded by the host encoder
  if [ -f "$kodak/kodim01.png" ]; then
    mkdir -p "$work/k01"
    cp "$kodak/kodim01.png" "$work/k01/"
    "$py" -m encoder "$work/k01" --targets all --out "$work/k01bits" >/dev/null 2>&1 \
      || die "host encoder failed on kodim01 (see: python -m encoder $kodak/kodim01.png ...)"
    cp "$work"/k01bits/*.bit "$in/"
    say "streams: + $(ls "$work"/k01bits/*.bit | wc -l) of kodim01 (768x512), one per challenge target"
  fi
else
  [ ${#golden[@]} -gt 0 ] && say "golden streams need the committed registry; encoding test streams instead"
  srcs=()
  for n in kodim01 kodim23; do [ -f "$kodak/$n.png" ] && srcs+=("$kodak/$n.png"); done
  [ ${#srcs[@]} -gt 0 ] || srcs=(samples/*.png)
  [ ${#srcs[@]} -gt 0 ] || die "no images to encode (set RATELOCK_KODAK)"
  "$py" - "$work" "${srcs[@]}" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
work = Path(sys.argv[1])
for i, src in enumerate(sys.argv[2:]):
    im = Image.open(src).convert("RGB")
    w, h = min(im.width, 320 - 64 * i), min(im.height, 200 + 24 * i)  # odd sizes: exercise padding/cropping
    im.crop((0, 0, w, h)).save(work / f"{Path(src).stem}_crop.png")
EOF
  for img in "$work"/*_crop.png; do
    for t in 0.06 0.25 1.0; do
      out="$in/$(basename "$img" .png)_t$t.bit"
      "$py" -m encoder "$img" "$t" "$out" --registry "$registry" --best-effort >/dev/null 2>&1 || true
      [ -s "$out" ] || die "host encoder made no stream for $img at $t bpp"
    done
  done
  say "streams: $(ls "$in" | wc -l) encoded by the host encoder from $(ls "$work"/*_crop.png | wc -l) crops at 0.06/0.25/1.0 bpp"
fi
chmod 0755 "$in"; chmod 0644 "$in"/*
streams=("$in"/*)

# ---- decode: host vs container ----------------------------------------------------------------
host="$work/host"; ctr="$work/ctr"; one="$work/one"
set +e
"$py" -m decoder --dir "$in" "$host" --registry "$registry" --info >"$work/host.info" 2>"$work/host.err"
host_rc=$?
set -e
pngs=("$host"/*.png)
[ ${#pngs[@]} -gt 0 ] || { cat "$work/host.err" >&2; die "host decoder produced no PNG"; }
stem="$(basename "${pngs[0]}" .png)"
first="$(cd "$in" && ls "$stem".bit* | head -1)"   # a stream the host decodes, for the single-file run

# The image's own user (10001) when we are root; else our uid, so we can read the 0600 PNGs back.
mkdir -p "$ctr" "$one"
if [ "$(id -u)" = 0 ]; then chmod 0777 "$ctr" "$one"; as=(); else as=(--user "$(id -u):$(id -g)"); fi
run=(docker run --rm --network=none --read-only "${as[@]}" -v "$in:/in:ro")
t0=$(date +%s.%N)
set +e
"${run[@]}" -v "$ctr:/out" "$image" --dir /in /out 2>"$work/ctr.err"
ctr_rc=$?
set -e
t1=$(date +%s.%N)
"${run[@]}" --ipc=none -v "$one:/out" "$image" "/in/$first" "/out/single.png" 2>"$work/one.err" || true

fail=0
[ "$host_rc" = "$ctr_rc" ] || { echo "exit status: host $host_rc, container $ctr_rc" >&2; tail -3 "$work/ctr.err" >&2; fail=1; }
diff <(cd "$host" && ls -A) <(cd "$ctr" && ls -A) >&2 || { echo "different output file sets (host <, container >)" >&2; fail=1; }
n=0
for f in "$host"/*.png; do
  b="$(basename "$f")"
  if cmp -s "$f" "$ctr/$b"; then n=$((n + 1)); else echo "DIFFERENT: $b" >&2; fail=1; fi
done
cmp -s "$host/$stem.png" "$one/single.png" || { echo "DIFFERENT: single-file decode of $first (--ipc=none)" >&2; cat "$work/one.err" >&2; fail=1; }
[ "$(ls -A "$one")" = single.png ] || { echo "left behind in the output folder: $(ls -A "$one")" >&2; fail=1; }
[ "$fail" = 0 ] || die "container output differs from the host decoder"
rejected=$(( ${#streams[@]} - n ))
say "OK: $n of ${#streams[@]} streams decode to byte-identical PNGs in the container (--network=none --read-only)$(
  [ "$rejected" = 0 ] || echo ", $rejected rejected by both (exit $host_rc)"); folder run \
$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s incl. start-up; single-file run ($first, --ipc=none) identical too"
