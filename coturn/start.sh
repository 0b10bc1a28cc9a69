#!/usr/bin/env bash
# Render turnserver.conf from the template and run coturn in the foreground.
#
# Required: TURN_REALM, TURN_EXTERNAL_IP, TURN_TLS_CERT, TURN_TLS_KEY and the secret, as
# TURN_SECRET or TURN_SECRET_FILE (the same value Boltorezka has in BOLTOREZKA_TURN_SECRET).
# Optional: TURN_SECRET_PREVIOUS or TURN_SECRET_PREVIOUS_FILE during a rotation,
# TURN_LISTEN_IP (default 0.0.0.0), TURN_CONFIG_OUT (default /run/boltorezka/turnserver.conf).
#
# Secrets live either in the rendered file (static-auth-secret lines; changing them needs a
# restart) or, with TURN_USERDB=<sqlite file>, in coturn's database, where
# coturn/rotate-secret.sh adds and removes them while coturn runs: the way to rotate
# without dropping a single allocation. The database is seeded with the secret(s) at start.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

read_secret() {  # $1: variable name; prints the value from $1 or from the file in ${1}_FILE
  local name=$1 file_var="${1}_FILE"
  if [[ -n "${!name:-}" ]]; then printf '%s' "${!name}"
  elif [[ -n "${!file_var:-}" ]]; then tr -d '\r\n' < "${!file_var}"
  fi
}

secret=$(read_secret TURN_SECRET)
previous=$(read_secret TURN_SECRET_PREVIOUS)
if [[ -z "$secret" ]]; then
  echo "coturn/start.sh: set TURN_SECRET or TURN_SECRET_FILE" >&2
  exit 2
fi
if (( ${#secret} < 32 )); then
  echo "coturn/start.sh: TURN_SECRET must be at least 32 characters" >&2
  exit 2
fi
for var in TURN_REALM TURN_EXTERNAL_IP TURN_TLS_CERT TURN_TLS_KEY; do
  if [[ -z "${!var:-}" ]]; then echo "coturn/start.sh: set $var" >&2; exit 2; fi
done

if [[ -n "${TURN_USERDB:-}" ]]; then
  secrets_block="userdb=${TURN_USERDB}"
  mkdir -p "$(dirname "$TURN_USERDB")"
  for value in "$secret" "$previous"; do
    if [[ -n "$value" ]]; then
      TURN_SECRET="$value" "$here/rotate-secret.sh" add >/dev/null
    fi
  done
else
  secrets_block="static-auth-secret=${secret}"
  if [[ -n "$previous" ]]; then
    secrets_block+=$'\n'"static-auth-secret=${previous}"
  fi
fi

config=$(<"$here/turnserver.conf.template")
config=${config//@LISTEN_IP@/${TURN_LISTEN_IP:-0.0.0.0}}
config=${config//@EXTERNAL_IP@/$TURN_EXTERNAL_IP}
config=${config//@TLS_CERT@/$TURN_TLS_CERT}
config=${config//@TLS_KEY@/$TURN_TLS_KEY}
config=${config//@REALM@/$TURN_REALM}
config=${config//@STATIC_AUTH_SECRETS@/$secrets_block}

out=${TURN_CONFIG_OUT:-/run/boltorezka/turnserver.conf}
mkdir -p "$(dirname "$out")"
umask 077
printf '%s\n' "$config" > "$out"
exec turnserver -c "$out"
