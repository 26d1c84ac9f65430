#!/usr/bin/env bash
# Renders nginx/*.conf.template into $RUN_DIR for this machine's paths and port.
# Usage: scripts/render-nginx-config.sh   (settings from the environment)
#
# Settings: those that nginx reads in app/config.py's SETTINGS (the README's
# table): PORT, BIND_ADDRESS, REQUEST_TIMEOUT, UPSTREAM_MARGIN, RATE_LIMIT,
# RATE_BURST, CONNECTION_LIMIT, TRUSTED_PROXIES, INTERNAL_ADDRESSES. Their
# defaults and ranges are repeated here, since the nginx image has no Python to
# ask (tests/test_settings_source.py holds the two together). nginx waits for
# the app REQUEST_TIMEOUT + UPSTREAM_MARGIN, so that the app always answers first.
# Paths:
#   RUN_DIR          where the rendered files, pid and temp files go   (run/nginx)
#   POKEGEN_SOCKET   uWSGI's unix socket                               (run/uwsgi.sock)
#   POKEGEN_SOCKET_DIR  instead, a folder of replicas' sockets (app-*.sock); see
#                    scripts/render-nginx-upstreams.sh                 (unset)
#   STATIC_DIR       the page's files                                  (app/static)
#   NGINX_USER       user of nginx's workers when started as root      (owner of the checkout)
# Only the names given to envsubst below are substituted: nginx's own
# $variables stay as they are.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

export RUN_DIR="${RUN_DIR:-$root/run/nginx}"
export PORT="${PORT:-5000}"
export BIND_ADDRESS="${BIND_ADDRESS:-0.0.0.0}"
export POKEGEN_SOCKET="${POKEGEN_SOCKET:-$root/run/uwsgi.sock}"
export STATIC_DIR="${STATIC_DIR:-$root/app/static}"
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-300}"
UPSTREAM_MARGIN="${UPSTREAM_MARGIN:-30}"
# Workers must read the page and reach the socket, both inside the checkout.
export NGINX_USER="${NGINX_USER:-$(stat -c %U "$root")}"
export RATE_LIMIT="${RATE_LIMIT:-10}"
export RATE_BURST="${RATE_BURST:-40}"
export CONNECTION_LIMIT="${CONNECTION_LIMIT:-8}"
TRUSTED_PROXIES="${TRUSTED_PROXIES:-}"
INTERNAL_ADDRESSES="${INTERNAL_ADDRESSES-127.0.0.1 ::1}"
for name in RATE_LIMIT RATE_BURST CONNECTION_LIMIT; do
  if ! [[ "${!name}" =~ ^[1-9][0-9]{0,5}$ ]]; then
    echo "error: $name must be a whole number from 1 to 999999, got '${!name}'" >&2
    exit 1
  fi
done
# The one place where nginx's wait for the app is derived from the app's deadline (whole
# seconds, rounded up): make serve, the nginx image and the Kubernetes pod all render here.
request_seconds=-1
if [[ "$REQUEST_TIMEOUT" =~ ^([0-9]{1,5})(\.[0-9]+)?$ ]]; then
  request_seconds=$(( 10#${BASH_REMATCH[1]} ))
  [[ "${BASH_REMATCH[2]}" =~ [1-9] ]] && request_seconds=$(( request_seconds + 1 ))
fi
if (( request_seconds < 1 || request_seconds > 86400 )); then
  echo "error: REQUEST_TIMEOUT must be a number of seconds from 1 to 86400, like 300 or 12.5, got '$REQUEST_TIMEOUT'" >&2
  exit 1
fi
if ! [[ "$UPSTREAM_MARGIN" =~ ^[1-9][0-9]{0,3}$ ]]; then
  echo "error: UPSTREAM_MARGIN must be a whole number of seconds from 1 to 9999, got '$UPSTREAM_MARGIN'" >&2
  exit 1
fi
export UPSTREAM_TIMEOUT="$(( request_seconds + UPSTREAM_MARGIN ))"
# nginx refuses delay=0: a burst of 1 is taken at once.
export RATE_DELAY="$(( RATE_BURST > 1 ? RATE_BURST / 2 : 1 ))"

# One nginx line per address or range, each checked first: "DIRECTIVE ADDRESS;".
address_lines() {
  local name="$1" directive="$2" address lines=""
  for address in ${!name//,/ }; do
    if ! [[ "$address" =~ ^[0-9a-fA-F:.]+(/[0-9]{1,3})?$ ]]; then
      echo "error: $name must list IP addresses or CIDR ranges, got '$address'" >&2
      exit 1
    fi
    lines+="    $directive $address;"$'\n'
  done
  printf '%s' "$lines"
}
REAL_IP_FROM="$(address_lines TRUSTED_PROXIES set_real_ip_from)" || exit 1
INTERNAL_ALLOW="$(address_lines INTERNAL_ADDRESSES "    allow")" || exit 1
# $(...) drops the last newline: put it back so the next directive starts a line.
export REAL_IP_FROM="${REAL_IP_FROM:+$REAL_IP_FROM$'\n'}"
export INTERNAL_ALLOW="${INTERNAL_ALLOW:+$INTERNAL_ALLOW$'\n'}"

mkdir -p "$RUN_DIR/temp"
"$root/scripts/render-nginx-upstreams.sh" >/dev/null
names='${RUN_DIR} ${PORT} ${BIND_ADDRESS} ${POKEGEN_SOCKET} ${STATIC_DIR} ${UPSTREAM_TIMEOUT} ${NGINX_USER}
  ${RATE_LIMIT} ${RATE_BURST} ${RATE_DELAY} ${CONNECTION_LIMIT} ${REAL_IP_FROM} ${INTERNAL_ALLOW}'
for name in nginx.conf pokegen.conf uwsgi-params.conf; do
  envsubst "$names" < "$root/nginx/$name.template" > "$RUN_DIR/$name.tmp"
  mv "$RUN_DIR/$name.tmp" "$RUN_DIR/$name"
done
echo "$RUN_DIR/nginx.conf"
