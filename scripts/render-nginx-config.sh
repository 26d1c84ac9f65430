#!/usr/bin/env bash
# Renders nginx/*.conf.template into $RUN_DIR for this machine's paths and port.
# Usage: scripts/render-nginx-config.sh   (settings from the environment)
#   RUN_DIR          where the rendered files, pid and temp files go   (run/nginx)
#   PORT             port nginx listens on                             (5000)
#   BIND_ADDRESS     address nginx listens on                          (0.0.0.0)
#   POKEGEN_SOCKET   uWSGI's unix socket                               (run/uwsgi.sock)
#   POKEGEN_SOCKET_DIR  instead, a folder of replicas' sockets (app-*.sock); see
#                    scripts/render-nginx-upstreams.sh                 (unset)
#   STATIC_DIR       the page's files                                  (app/static)
#   UPSTREAM_TIMEOUT seconds nginx waits for the app; keep it above
#                    REQUEST_TIMEOUT                                   (330)
#   NGINX_USER       user of nginx's workers when started as root      (owner of the checkout)
#   RATE_LIMIT       requests a second each client address may send to
#                    the app (the page's files are not counted)        (10)
#   RATE_BURST       extra requests allowed in a burst: the first half
#                    at once, the rest paced, beyond it a JSON 429     (40)
# Only these names are substituted: nginx's own $variables stay as they are.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

export RUN_DIR="${RUN_DIR:-$root/run/nginx}"
export PORT="${PORT:-5000}"
export BIND_ADDRESS="${BIND_ADDRESS:-0.0.0.0}"
export POKEGEN_SOCKET="${POKEGEN_SOCKET:-$root/run/uwsgi.sock}"
export STATIC_DIR="${STATIC_DIR:-$root/app/static}"
export UPSTREAM_TIMEOUT="${UPSTREAM_TIMEOUT:-330}"
# Workers must read the page and reach the socket, both inside the checkout.
export NGINX_USER="${NGINX_USER:-$(stat -c %U "$root")}"
export RATE_LIMIT="${RATE_LIMIT:-10}"
export RATE_BURST="${RATE_BURST:-40}"
for name in RATE_LIMIT RATE_BURST; do
  if ! [[ "${!name}" =~ ^[1-9][0-9]{0,5}$ ]]; then
    echo "error: $name must be a whole number from 1 to 999999, got '${!name}'" >&2
    exit 1
  fi
done
export RATE_DELAY="$(( RATE_BURST / 2 ))"

mkdir -p "$RUN_DIR/temp"
"$root/scripts/render-nginx-upstreams.sh" >/dev/null
names='${RUN_DIR} ${PORT} ${BIND_ADDRESS} ${POKEGEN_SOCKET} ${STATIC_DIR} ${UPSTREAM_TIMEOUT} ${NGINX_USER}
  ${RATE_LIMIT} ${RATE_BURST} ${RATE_DELAY}'
for name in nginx.conf pokegen.conf; do
  envsubst "$names" < "$root/nginx/$name.template" > "$RUN_DIR/$name.tmp"
  mv "$RUN_DIR/$name.tmp" "$RUN_DIR/$name"
done
echo "$RUN_DIR/nginx.conf"
