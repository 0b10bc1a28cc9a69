#!/usr/bin/env bash
# Refresh the lock files in requirements/ from the ranges in pyproject.toml.
#
#   tools/lock.sh             # keep current pins where the ranges still allow them
#   tools/lock.sh --upgrade   # take the newest releases the ranges allow
#
# Which file is for what:
#   dev.txt     tests and tools, everything below too (README's test command, .ci/run)
#   all.txt     the server with every extra and the Python client (README's run command)
#   server.txt  the server and uvloop: the production image (no embedded PostgreSQL, no SFU)
#   sfu.txt     the server and the SFU's media stack: the SFU image
#   build.txt   what builds the wheels (tools/install-release.sh)
#
# dev.txt is resolved first, as the superset; the other files are resolved with it as a
# constraint, so every file pins a package to the same version.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v uv >/dev/null 2>&1; then
  uv=(uv)
else
  uv=(python3 -m uv)
fi
compile() {
  local out=$1
  shift
  "${uv[@]}" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --no-emit-package boltorezka --no-emit-package boltorezka-client \
    --custom-compile-command "tools/lock.sh" --output-file "requirements/$out" "$@"
}

compile dev.txt "$@" pyproject.toml clients/python/pyproject.toml requirements/build.in \
  --extra dev
compile all.txt -c requirements/dev.txt pyproject.toml clients/python/pyproject.toml \
  requirements/build.in --extra all
compile sfu.txt -c requirements/dev.txt pyproject.toml --extra sfu
compile server.txt -c requirements/dev.txt pyproject.toml --extra fast
compile build.txt -c requirements/dev.txt requirements/build.in
