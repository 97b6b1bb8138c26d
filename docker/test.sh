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

# ---- batch in the container: a 4K stream and a 1,000-stream folder under --memory=2g -----------------
# --read-only --network=none --memory=2g: the 4K stream and a folder of 1,000 streams (one of them corrupt)
# decode byte-identically to the host; the corrupt one is one line and "1 of 1000 streams failed" (exit 1);
# a SIGKILLed container (docker kill) leaves only whole PNGs, a SIGTERMed one (docker stop) exits 143, and
# re-running the same command completes the folder. RATELOCK_DOCKER_BATCH=0 skips this part.
[ "${RATELOCK_DOCKER_BATCH:-1}" = 1 ] || exit 0
bt="$work/batch"
mkdir -p "$bt/in4k" "$bt/in1k"
"$py" - "$bt" "$registry" "$kodak" <<'EOF' || die "making the batch streams"
import shutil, sys
from pathlib import Path
import numpy as np
from PIL import Image
from encoder.api import Encoder
bt, registry, kodak = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
files = sorted(kodak.glob("kodim*.png")) or sorted(Path("samples").glob("*.png"))
tiles = [np.asarray(Image.open(f).convert("RGB")) for f in files[:12]]
rng = np.random.default_rng(0)
enc = Encoder(registry)
n = len(enc.models.distinct_entries())
big = np.zeros((2160, 3840, 3), np.uint8)                 # a 4K mosaic of photographs, not one upscaled
for y in range(0, 2160, 256):
    for x in range(0, 3840, 256):
        t = tiles[(y // 256 * 15 + x // 256) % len(tiles)]
        big[y:y + 256, x:x + 256] = t[:256, :256][:min(256, 2160 - y), :min(256, 3840 - x)]
(bt / "in4k" / "mosaic_3840x2160.bit").write_bytes(enc.encode_fixed(big, n // 2, 128))
distinct = bt / "distinct"
distinct.mkdir()
for i in range(40):                                        # mixed sizes, every model
    t = tiles[i % len(tiles)]
    h, w = (int(v) for v in rng.integers(16, min(320, *t.shape[:2]) + 1, 2))
    (distinct / f"d{i:02d}.bit").write_bytes(enc.encode_fixed(np.ascontiguousarray(t[:h, :w]), i % n, 120 + i % 16))
for k in range(25):
    for f in sorted(distinct.glob("*.bit")):
        shutil.copy(f, bt / "in1k" / f"c{k:02d}_{f.name}")
bad = bt / "in1k" / "c00_d07.bit"
bad.write_bytes(bad.read_bytes()[:-9])                     # truncated: one bad stream among 1,000
EOF
chmod 0755 "$bt" "$bt/in4k" "$bt/in1k"; chmod 0644 "$bt"/in4k/* "$bt"/in1k/*
"$py" -m decoder --dir "$bt/in4k" "$bt/host4k" --registry "$registry" 2>"$work/host4k.err" || { cat "$work/host4k.err" >&2; die "host decode of the 4K stream"; }
"$py" -m decoder --dir "$bt/distinct" "$bt/hostd" --registry "$registry" 2>"$work/hostd.err" || { cat "$work/hostd.err" >&2; die "host decode of the small streams"; }
# the corrupt stream's PNG must not exist; every other c<k>_<d>.png must equal the host's <d>.png
check_1k() {  # folder, expect_all(1|0) -> "complete identical missing"
  "$py" - "$1" "$bt/hostd" "$2" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
out, ref, expect_all = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
pngs = sorted(out.glob("*.png"))
for p in pngs:
    with Image.open(p) as im:
        im.load()                                              # a partial PNG raises here
    assert p.read_bytes() == (ref / p.name.split("_", 1)[1]).read_bytes(), f"{p.name} differs from the host decode"
assert not (out / "c00_d07.png").exists(), "the corrupt stream has a PNG"
temps = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
assert not (expect_all and temps), f"temp files left: {temps}"
assert not expect_all or len(pngs) == 999, f"{len(pngs)} PNGs, expected 999"
print(len(pngs), len(temps))
EOF
}
mkdir -p "$bt/ctr4k" "$bt/ctr1k" "$bt/kill1k"
[ "$(id -u)" = 0 ] && chmod 0777 "$bt/ctr4k" "$bt/ctr1k" "$bt/kill1k"
lim=(docker run --network=none --read-only --memory=2g --memory-swap=2g "${as[@]}")
peak=(--entrypoint python3 "$image" -c 'import resource, subprocess, sys
r = subprocess.run([sys.executable, "/opt/ratelock/entrypoint.py", *sys.argv[1:]])
print(f"peak RSS {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024} MiB", file=sys.stderr)
sys.exit(r.returncode)')
t0=$(date +%s)
"${lim[@]}" --rm -v "$bt/in4k:/in:ro" -v "$bt/ctr4k:/out" "${peak[@]}" --dir /in /out 2>"$work/ctr4k.err" \
  || { cat "$work/ctr4k.err" >&2; die "4K decode in the container under --memory=2g"; }
cmp -s "$bt/host4k/mosaic_3840x2160.png" "$bt/ctr4k/mosaic_3840x2160.png" || die "4K PNG differs from the host decode"
say "4K stream (3840x2160) under --read-only --network=none --memory=2g: byte-identical, $(tail -1 "$work/ctr4k.err"), $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
set +e
"${lim[@]}" --rm -v "$bt/in1k:/in:ro" -v "$bt/ctr1k:/out" "${peak[@]}" --dir /in /out 2>"$work/ctr1k.err"
rc=$?
set -e
[ "$rc" = 1 ] || { tail -5 "$work/ctr1k.err" >&2; die "1,000-stream folder: exit $rc, expected 1 (one corrupt stream)"; }
grep -v '^peak RSS' "$work/ctr1k.err" >"$work/ctr1k.lines"
[ "$(wc -l <"$work/ctr1k.lines")" = 2 ] && grep -q ': c00_d07.bit: ' "$work/ctr1k.lines" \
  && grep -q '1 of 1000 streams failed' "$work/ctr1k.lines" || { cat "$work/ctr1k.lines" >&2; die "1,000-stream folder: stderr is not one line for the bad stream and the summary"; }
check_1k "$bt/ctr1k" 1 >/dev/null || die "1,000-stream folder: outputs"
say "1,000-stream folder under --memory=2g: 999 byte-identical PNGs, the corrupt one reported in one line, exit 1, $(tail -1 "$work/ctr1k.err"), $(( $(date +%s) - t0 )) s"
# SIGKILL, then SIGTERM, then the same command to the end
name="ratelock-batch-$$"
for sig in KILL TERM; do
  touch "$bt/mark"
  "${lim[@]}" -d --name "$name" -v "$bt/in1k:/in:ro" -v "$bt/kill1k:/out" "$image" --dir /in /out --force >/dev/null
  for _ in $(seq 600); do [ "$(find "$bt/kill1k" -name '*.png' -newer "$bt/mark" | wc -l)" -ge 20 ] && break; sleep 0.2; done
  sleep "0.$((RANDOM % 9))"
  if [ "$sig" = KILL ]; then docker kill "$name" >/dev/null; else docker stop -t 30 "$name" >/dev/null; fi
  code=$(docker inspect -f '{{.State.ExitCode}}' "$name"); docker rm "$name" >/dev/null
  [ "$sig" = TERM ] && [ "$code" != 143 ] && die "docker stop: exit $code, expected 143"
  got=$(check_1k "$bt/kill1k" 0) || die "after SIG$sig: a partial or wrong PNG"
  say "SIG$sig mid-batch (exit $code): $got PNG(s) and temp file(s), every PNG whole and identical"
done
set +e
"${lim[@]}" --rm -v "$bt/in1k:/in:ro" -v "$bt/kill1k:/out" "$image" --dir /in /out 2>/dev/null
rc=$?
set -e
[ "$rc" = 1 ] && check_1k "$bt/kill1k" 1 >/dev/null || die "re-run after SIGKILL/SIGTERM did not complete the folder (exit $rc)"
say "OK: re-running the same command after SIGKILL and SIGTERM completed the folder (999 PNGs, no temp file left)"
