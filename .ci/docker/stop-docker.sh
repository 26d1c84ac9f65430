#!/usr/bin/env bash
# Stops the Docker engine only if ensure-docker.sh (beside this script) started it.
set -euo pipefail

STARTED_MARKER=${POKEGEN_DOCKERD_MARKER:-/run/pokegen-dockerd.pid}

[ -f "$STARTED_MARKER" ] || exit 0
pid=$(cat "$STARTED_MARKER")
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
  echo "Stopping the dockerd started for pokegen (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
fi
rm -f "$STARTED_MARKER"
