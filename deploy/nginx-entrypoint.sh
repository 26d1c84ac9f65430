#!/usr/bin/env bash
# The nginx container's entry point: renders the configuration for this container's
# environment (see scripts/render-nginx-config.sh), checks it, starts the replicas' watcher
# (deploy/upstream-watch.sh), then runs nginx in the foreground as the container's main
# process, logging to stdout and stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
conf="$(scripts/render-nginx-config.sh)"
nginx -t -q -p "$RUN_DIR" -c "$conf" -e stderr
# Replicas come and go (docker-compose up --scale app=N): the watcher keeps the upstream current.
deploy/upstream-watch.sh &
exec nginx -p "$RUN_DIR" -c "$conf" -e stderr -g "daemon off;"
