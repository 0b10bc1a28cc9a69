#!/usr/bin/env bash
# Build and test the Swift package on Linux, against a real server.
#
# Debian bookworm has no Swift toolchain, so the package is built in a Debian trixie chroot
# (its `swiftlang`, Swift 6.0.3), kept outside the repository and reused by every later run
# on this machine. The server runs here on the host in a throwaway PostgreSQL schema; the
# chroot shares the host's network namespace, so the tests reach it on 127.0.0.1.
#
#   clients/swift/ci.sh             create or reuse the chroot, start a server, build, test
#   clients/swift/ci.sh --prepare   only create the chroot (if it is not there yet)
#   clients/swift/ci.sh --no-server build and test without a server (the live tests skip)
#   clients/swift/ci.sh -- --filter VectorTests   pass options on to `swift test`
#
# Environment (all optional):
#   BOLTOREZKA_SWIFT_CACHE        where the chroot lives (default /var/cache/boltorezka)
#   BOLTOREZKA_SWIFT_JOBS         build jobs (default 2: the CI machine has 2 shared cores)
#   BOLTOREZKA_TEST_DATABASE_URL  the PostgreSQL the server uses (the tests' default)
#   BOLTOREZKA_DEBIAN_MIRROR      the mirror debootstrap reads (default deb.debian.org)
#   PYTHON                        the interpreter with boltorezka installed
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${BOLTOREZKA_SWIFT_CACHE:-/var/cache/boltorezka}
root=$cache/swift-trixie
jobs=${BOLTOREZKA_SWIFT_JOBS:-2}
db_url=${BOLTOREZKA_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
mirror=${BOLTOREZKA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=(swiftlang libcurl4 ca-certificates)
# What a finished chroot records about itself; a chroot made from another list is rebuilt.
recipe="trixie minbase ${packages[*]} v1"
ready=.boltorezka-ready
# One path inside the chroot for every run: SwiftPM's build cache is keyed on absolute
# source paths, so a fixed mount point keeps the second run incremental.
inner_repo=/repo
# Per host checkout, so two worktrees on one machine do not rebuild each other's cache.
scratch=/var/cache/boltorezka-swift/$(printf '%s' "$repo" | sha256sum | cut -c1-12)

log() { printf '== swift: %s\n' "$*" >&2; }

chroot_ready() {
  [[ -f "$root/$ready" && "$(cat "$root/$ready")" == "$recipe" ]]
}

# Refuse to delete a tree anything is mounted under: `rm -rf` would follow a bind mount
# into /dev or the repository. Every mount this script makes lives in a private mount
# namespace (unshare) and dies with it, so this only trips on someone else's mount.
safe_remove() {
  local dir=$1
  if awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    log "not removing $dir: something is mounted under it" && return 1
  fi
  rm -rf --one-file-system "$dir"
}

# Run a command in the chroot with /proc and /dev mounted, in mount and PID namespaces of
# its own: the mounts vanish when the command ends, however it ends (even on SIGKILL), and
# when unshare dies the kernel kills everything inside, compilers that swift-build put in
# process groups of their own included.
in_chroot() {
  local dir=$1
  shift
  local -a launch=(unshare --mount --propagation private --pid --fork --kill-child --)
  # Under run_group: become the leader of a process group of its own, in place (exec).
  [[ -n ${IN_CHROOT_SETSID:-} ]] && launch=(exec setsid "${launch[@]}")
  "${launch[@]}" bash -euc '
    dir=$1 repo=$2 inner=$3
    shift 3
    mount -t proc proc "$dir/proc"
    # Recursive, for /dev/pts and /dev/shm (apt and dpkg want a pty for their logs).
    mount --rbind /dev "$dir/dev"
    if [[ -n $repo ]]; then
      mkdir -p "$dir$inner"
      mount --bind "$repo" "$dir$inner"
      # The build reads the repository; nothing in the chroot may change it.
      mount -o remount,bind,ro "$dir$inner"
    fi
    # Not exec: this shell is PID 1 of the namespace and reaps what the build orphans.
    chroot "$dir" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
  ' _ "$dir" "${IN_CHROOT_REPO:-}" "$inner_repo" "$@"
}

ensure_chroot() {
  chroot_ready && return 0
  mkdir -p "$cache"
  # Concurrent runs on this machine wait here for whichever one is building the chroot.
  exec {build_lock}>"$cache/swift-trixie.build.lock"
  flock "$build_lock"
  if chroot_ready; then
    exec {build_lock}>&-
    return 0
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  fi
  # Leftovers of runs interrupted while building (we hold the lock, so none is live).
  local old
  for old in "$cache"/swift-trixie.tmp.*; do
    [[ -e $old ]] && safe_remove "$old"
  done
  local started=$SECONDS tmp
  tmp=$(mktemp -d "$cache/swift-trixie.tmp.XXXXXX")
  # mktemp's 0700 would keep apt's unprivileged downloader (_apt) out of the tree.
  chmod 755 "$tmp"
  log "creating the trixie chroot in $tmp (a few minutes, about 3 GB)"
  # debootstrap mounts /proc and /sys inside the target itself; in a mount namespace of
  # its own, an interrupted run leaves no mount behind on the host.
  run_group unshare --mount --propagation private -- \
    debootstrap --variant=minbase trixie "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; log "debootstrap failed (log: $tmp.log)"; return 1; }
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  run_group in_chroot "$tmp" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq ${packages[*]} >/dev/null && apt-get clean" ||
    { log "installing ${packages[*]} in the chroot failed"; return 1; }
  run_group in_chroot "$tmp" swift --version >&2
  printf '%s\n' "$recipe" >"$tmp/$ready"
  rm -f "$tmp.log"
  # The rename is the commit: a chroot at $root is always a finished one.
  if [[ -e $root ]]; then
    mv "$root" "$root.stale.$$"
    safe_remove "$root.stale.$$"
  fi
  mv "$tmp" "$root"
  log "chroot ready in $((SECONDS - started)) s: $(du -sh "$root" | cut -f1)"
  exec {build_lock}>&-
}

pick_python() {
  local candidate
  for candidate in "${PYTHON:-}" python python3 "$repo/.venv/bin/python"; do
    [[ -n $candidate ]] || continue
    if "$candidate" -c 'import boltorezka' >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  log "no Python with boltorezka installed; activate the dev venv or set PYTHON"
  return 1
}

server_pid=
schema=
workdir=
child=
python=
# Run a command as its own process group and wait for it, so that a signal reaches the
# trap at once (bash defers traps while a foreground command runs) and the cleanup can stop
# the whole tree: swift-build's compilers, swift-test's xctest runner.
run_group() {
  if [[ $1 == in_chroot ]]; then
    IN_CHROOT_SETSID=1 "$@" &
  else
    setsid "$@" &
  fi
  child=$!
  local status=0
  wait "$child" || status=$?
  child=
  return "$status"
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n $child ]]; then
    kill -TERM -- "-$child" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 -- "-$child" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$child" 2>/dev/null || true
  fi
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    # `serve` drains on SIGTERM; it has the drain time and a little more before SIGKILL.
    for _ in $(seq 1 150); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ -n $schema ]]; then
    sql "DROP SCHEMA IF EXISTS $schema CASCADE" || log "could not drop schema $schema"
  fi
  if [[ -n $workdir ]]; then
    if ((status != 0)) && [[ -s $workdir/server.log ]]; then
      log "server log (last 40 lines):"
      tail -n 40 "$workdir/server.log" >&2
    fi
    rm -rf "$workdir"
  fi
  exit "$status"
}

# One statement on the tests' PostgreSQL, through the server's own driver (no psql needed).
sql() {
  "$python" -c '
import asyncio, sys
import asyncpg

async def run(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()

asyncio.run(run(sys.argv[1], sys.argv[2]))
' "$db_url" "$1"
}

start_server() {
  local port base
  python=$(pick_python)
  schema=swift_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  sql "CREATE SCHEMA $schema"
  workdir=$(mktemp -d /tmp/bz-swift-XXXXXX)
  port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  base=http://127.0.0.1:$port
  local sep='?'
  [[ $db_url == *\?* ]] && sep='&'
  # The server's settings come from here only, never from the caller's BOLTOREZKA_*.
  local -a clear=()
  local name
  for name in $(compgen -e); do
    [[ $name == BOLTOREZKA_* ]] && clear+=(-u "$name")
  done
  # A 60 s access token with the warning 50 s ahead: auth.expiring arrives 10 s after every
  # auth, so the refresh path runs live (and under every longer test) instead of in 14 min.
  env "${clear[@]}" \
    BOLTOREZKA_DATABASE_URL="$db_url${sep}options=-csearch_path%3D$schema" \
    BOLTOREZKA_HOST=127.0.0.1 \
    BOLTOREZKA_PORT="$port" \
    BOLTOREZKA_DATA_DIR="$workdir" \
    BOLTOREZKA_JWT_SECRET="$(od -An -N48 -tx1 /dev/urandom | tr -d ' \n')" \
    BOLTOREZKA_LOG_LEVEL=warning \
    BOLTOREZKA_REGISTER_RATE_PER_MINUTE=100000 \
    BOLTOREZKA_LOGIN_RATE_PER_MINUTE=100000 \
    BOLTOREZKA_WS_CONNECT_RATE_PER_MINUTE=100000 \
    BOLTOREZKA_ACCESS_TOKEN_TTL=60 \
    BOLTOREZKA_AUTH_EXPIRY_WARNING_SECONDS=50 \
    BOLTOREZKA_WS_DRAIN_SECONDS=2 \
    PYTHONUNBUFFERED=1 \
    "$python" -m boltorezka serve >"$workdir/server.log" 2>&1 &
  server_pid=$!
  local waited=0
  until "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "$base/healthz" >/dev/null 2>&1; do
    kill -0 "$server_pid" 2>/dev/null || { log "the server exited"; return 1; }
    ((waited++ < 600)) || { log "the server did not become healthy in 60 s"; return 1; }
    sleep 0.1
  done
  server_url=$base
  log "server on $base, schema $schema"
}

main() {
  local server=1 prepare_only=0
  while (($#)); do
    case $1 in
      --prepare) prepare_only=1 ;;
      --no-server) server=0 ;;
      --) shift; break ;;
      *) log "unknown option $1 (use --prepare, --no-server, -- <swift test options>)"; return 2 ;;
    esac
    shift
  done
  local started=$SECONDS
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  ensure_chroot
  ((prepare_only)) && return
  # One Swift build at a time on this machine: they are CPU-heavy, and concurrent runs of
  # one checkout would share the build cache. Taken before the server starts, so a run
  # that waits here holds no server and no schema.
  exec {run_lock}>"$cache/swift-trixie.run.lock"
  flock "$run_lock"
  local -a live=()
  if ((server)); then
    start_server
    live=(BOLTOREZKA_SWIFT_SERVER_URL="$server_url")
  fi
  local pkg=$inner_repo/clients/swift
  log "swift build -j $jobs"
  IN_CHROOT_REPO=$repo run_group in_chroot "$root" \
    swift build -j "$jobs" --package-path "$pkg" --scratch-path "$scratch" --build-tests
  log "swift test ${live[*]:-(no live server: the live tests skip)}"
  # The vector and contract tests read protocol/ from the repository at test time, so a
  # contract change the Swift models cannot follow fails here.
  IN_CHROOT_REPO=$repo run_group in_chroot "$root" "${live[@]}" \
    BOLTOREZKA_PROTOCOL_DIR="$inner_repo/protocol" \
    swift test --skip-build --package-path "$pkg" --scratch-path "$scratch" "$@"
  log "passed in $((SECONDS - started)) s"
}

# On one line: bash reads a script as it runs, so an edit made meanwhile cannot shift what runs next.
main "$@"; exit $?
