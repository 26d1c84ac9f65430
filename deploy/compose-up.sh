#!/usr/bin/env bash
# `make compose-up`: `docker-compose up -d --build`, then a wait until the service answers ready
# through nginx, and its address. Needs Docker and docker-compose (docs/deploy-ec2.md).
#
# Settings (environment):
#   PORT                 port nginx publishes (5000)
#   POKEGEN_CHECKPOINT   baked (default: ./checkpoint goes into the image; the demo model is built
#                        first when checkpoint/run1 is empty) or volume (CHECKPOINT_DIR is mounted,
#                        deploy/docker-compose.checkpoint-volume.yml)
#   CHECKPOINT_DIR       with volume: the folder holding RUN_NAME (./checkpoint)
#   RUN_NAME             the run to serve (run1)
#   APP_REPLICAS         app replicas behind nginx (1): docker-compose up --scale app=N
#   READY_TIMEOUT        seconds to wait for readiness, the build included (900)
#   COMPOSE_FILE         when set, the compose files to use, as docker-compose reads it
#   COMPOSE_PROJECT_NAME the compose project (pokegen)
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pokegen}
started=$SECONDS
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
replicas=${APP_REPLICAS:-1}
if ! [[ "$replicas" =~ ^[1-9][0-9]{0,2}$ ]]; then
  echo "error: APP_REPLICAS must be a whole number from 1 to 999, got '$replicas'" >&2
  exit 1
fi

run_name=${RUN_NAME:-run1}
case "${POKEGEN_CHECKPOINT:-baked}" in
  volume)
    if [ ! -f "${CHECKPOINT_DIR:-checkpoint}/$run_name/checkpoint" ]; then
      echo "error: no checkpoint in ${CHECKPOINT_DIR:-checkpoint}/$run_name (train one with train.py)" >&2
      exit 1
    fi
    export COMPOSE_FILE=${COMPOSE_FILE:-docker-compose.yml:docker-compose.override.yml:deploy/docker-compose.checkpoint-volume.yml}
    ;;
  baked)
    if [ ! -f "checkpoint/$run_name/checkpoint" ]; then
      if [ "$run_name" != run1 ]; then
        echo "error: no checkpoint in checkpoint/$run_name (train one with train.py)" >&2
        exit 1
      fi
      echo "No checkpoint in checkpoint/run1: building the demo model first (make model)."
      make --no-print-directory model
    fi
    ;;
  *)
    echo "error: POKEGEN_CHECKPOINT must be 'baked' or 'volume', got '$POKEGEN_CHECKPOINT'" >&2
    exit 1
    ;;
esac

docker-compose up -d --build --scale "app=$replicas"

port=${PORT:-5000}
if ! "$PYTHON" scripts/wait_ready.py "http://127.0.0.1:$port/readyz" --since "$(( SECONDS - started ))" \
      --timeout "${READY_TIMEOUT:-900}"; then
  echo "The app's last log lines:" >&2
  docker-compose logs --tail 30 app >&2 || true
  echo "The stack is still up for inspection; make compose-down removes it." >&2
  exit 1
fi
echo "pokegen is up on http://localhost:$port/  (try: curl 'http://localhost:$port/?prefix=Ash')"
