#!/usr/bin/env bash
# Add or remove a TURN REST shared secret in coturn's database while coturn runs.
#
#   TURN_SECRET_FILE=/etc/boltorezka/turn-secret.new coturn/rotate-secret.sh add
#   TURN_SECRET_FILE=/etc/boltorezka/turn-secret.old coturn/rotate-secret.sh remove
#   coturn/rotate-secret.sh count
#
# Needs TURN_USERDB (the SQLite file coturn runs with) and TURN_REALM. The secret is read
# from TURN_SECRET or TURN_SECRET_FILE. coturn looks secrets up per request, so a change
# applies to the next allocation without a restart. RUNBOOK.md gives the rotation order.
set -euo pipefail
action=${1:-}
: "${TURN_USERDB:?set TURN_USERDB to the SQLite database coturn runs with}"
: "${TURN_REALM:?set TURN_REALM}"

secret=${TURN_SECRET:-}
if [[ -z "$secret" && -n "${TURN_SECRET_FILE:-}" ]]; then
  secret=$(tr -d '\r\n' < "$TURN_SECRET_FILE")
fi

case "$action" in
  add)
    [[ -n "$secret" ]] || { echo "rotate-secret.sh: set TURN_SECRET or TURN_SECRET_FILE" >&2; exit 2; }
    turnadmin --set-secret="$secret" --realm="$TURN_REALM" --db="$TURN_USERDB" >/dev/null
    ;;
  remove)
    [[ -n "$secret" ]] || { echo "rotate-secret.sh: set TURN_SECRET or TURN_SECRET_FILE" >&2; exit 2; }
    turnadmin --delete-secret="$secret" --realm="$TURN_REALM" --db="$TURN_USERDB" >/dev/null
    ;;
  count)
    # How many secrets are active, without printing any of them.
    turnadmin --show-secret --realm="$TURN_REALM" --db="$TURN_USERDB" 2>/dev/null \
      | grep -c . || true
    ;;
  *)
    echo "usage: rotate-secret.sh add|remove|count" >&2
    exit 2
    ;;
esac
