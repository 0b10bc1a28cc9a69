#!/usr/bin/env bash
# Start coturn for tests: start-test.sh PORT MIN_RELAY_PORT MAX_RELAY_PORT SECRET [SECRET...]
# Runs in the foreground; the caller owns the process. Secrets go into a 0600 file
# in a private temporary directory, removed when coturn exits. With TURN_USERDB set, the
# secrets are put into that SQLite database instead (as coturn/rotate-secret.sh does).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
port=$1 min_port=$2 max_port=$3
shift 3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
umask 077
{
  cat "$here/turnserver.test.conf"
  echo "listening-port=$port"
  echo "min-port=$min_port"
  echo "max-port=$max_port"
  echo "pidfile=$dir/turnserver.pid"
  if [[ -n "${TURN_USERDB:-}" ]]; then
    echo "userdb=$TURN_USERDB"
  else
    for secret in "$@"; do echo "static-auth-secret=$secret"; done
  fi
} > "$dir/turnserver.conf"
if [[ -n "${TURN_USERDB:-}" ]]; then
  for secret in "$@"; do
    TURN_SECRET="$secret" TURN_REALM=boltorezka.test "$here/rotate-secret.sh" add
  done
fi
turnserver -c "$dir/turnserver.conf" &
child=$!
trap 'kill "$child" 2>/dev/null; wait "$child" 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
wait "$child"
