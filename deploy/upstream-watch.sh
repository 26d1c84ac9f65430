#!/usr/bin/env bash
# Runs beside nginx in its container: every second, lists the app replicas' sockets in
# POKEGEN_SOCKET_DIR and, when the set changed (`docker-compose up --scale app=N`), rewrites the
# upstream servers and reloads nginx. A reload lets the old workers finish the requests they
# hold. A replica that restarts binds the same socket again, so it rejoins without a reload.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RUN_DIR:?RUN_DIR must be set}"

while sleep "${UPSTREAM_WATCH_INTERVAL:-1}"; do
  if [ -n "$(scripts/render-nginx-upstreams.sh)" ] && [ -s "$RUN_DIR/nginx.pid" ]; then
    echo "upstream-watch: replicas now: $(grep -o 'app-[^ ]*\.sock' "$RUN_DIR/pokegen-upstreams.conf" | tr '\n' ' ')" >&2
    kill -HUP "$(cat "$RUN_DIR/nginx.pid")"
  fi
done
