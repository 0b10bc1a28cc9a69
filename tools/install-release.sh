#!/usr/bin/env bash
# Install Boltorezka as it ships: build the wheel from the locked build tools, then put the
# locked dependencies and that wheel (nothing from the source tree) into a fresh virtualenv.
#
#   tools/install-release.sh VENV [LOCK]     # LOCK defaults to requirements/server.txt
#
# The container image runs exactly this (Dockerfile), and tests/test_install.py runs it and
# starts the server from the result, so what the image carries is tested without an engine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$1
lock=${2:-$root/requirements/server.txt}
python=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Build from a copy of what the wheel is made of, so the checkout gets no build/ or egg-info.
mkdir "$work/src"
cp -r "$root/pyproject.toml" "$root/README.md" "$root/LICENSE" "$root/boltorezka" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m venv "$work/build"
"$work/build/bin/python" -m pip install -q --require-hashes -r "$root/requirements/build.txt"
"$work/build/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheels" \
  "$work/src"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --require-hashes -r "$lock"
"$venv/bin/python" -m pip install -q --no-deps "$work"/wheels/boltorezka-*.whl
echo "installed $(basename "$work"/wheels/boltorezka-*.whl) into $venv"
