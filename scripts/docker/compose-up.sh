#!/usr/bin/env bash
# `make compose-up`: builds the images, starts the stack in the background, waits until the
# service is ready through nginx and prints its address.
#
# Settings (environment):
#   PORT                 port nginx publishes (5000)
#   POKEGEN_CHECKPOINT   baked (default: ./checkpoint goes into the image; the demo model is built
#                        first when checkpoint/run1 is empty) or volume (CHECKPOINT_DIR is mounted)
#   CHECKPOINT_DIR       with volume: the folder holding RUN_NAME (./checkpoint)
#   RUN_NAME             the run to serve (run1)
#   POKEGEN_WHEELS       auto (default), 1 or 0: install Python packages downloaded by this host's
#                        pip, for hosts whose containers cannot reach PyPI on their own
#   READY_TIMEOUT        seconds to wait for readiness (900)
#   APP_REPLICAS         app replicas behind nginx (1): docker-compose up --scale app=N
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
replicas=${APP_REPLICAS:-1}
if ! [[ "$replicas" =~ ^[1-9][0-9]{0,2}$ ]]; then
  echo "error: APP_REPLICAS must be a whole number from 1 to 999, got '$replicas'" >&2
  exit 1
fi

scripts/docker/ensure-docker.sh
scripts/docker/ensure-base-image.sh

run_name=${RUN_NAME:-run1}
if [ "${POKEGEN_CHECKPOINT:-baked}" = volume ]; then
  if [ ! -f "${CHECKPOINT_DIR:-checkpoint}/$run_name/checkpoint" ]; then
    echo "error: no checkpoint in ${CHECKPOINT_DIR:-checkpoint}/$run_name (train one with train.py)" >&2
    exit 1
  fi
elif [ ! -f "checkpoint/$run_name/checkpoint" ]; then
  if [ "$run_name" != run1 ]; then
    echo "error: no checkpoint in checkpoint/$run_name (train one with train.py)" >&2
    exit 1
  fi
  echo "No checkpoint in checkpoint/run1: building the demo model first (make model)."
  make --no-print-directory model
fi

if [ "${POKEGEN_WHEELS:-auto}" = auto ]; then
  if "$PYTHON" scripts/docker/pypi_trusted_publicly.py; then
    POKEGEN_WHEELS=0
  else
    echo "Containers cannot use PyPI from this host: the image gets packages downloaded here."
    POKEGEN_WHEELS=1
  fi
fi
export POKEGEN_WHEELS
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wheels_server=""
stop_wheels_server() {
  if [ -n "$wheels_server" ]; then
    kill "$wheels_server" 2>/dev/null || true
    wait "$wheels_server" 2>/dev/null || true
    wheels_server=""
  fi
}
trap stop_wheels_server EXIT
if [ "$POKEGEN_WHEELS" = 1 ]; then
  scripts/docker/fetch-wheels.sh
  # The build's pip finds them on the loopback address (docker-compose.local-wheels.yml), only
  # while the images build. A fixed port keeps the build's cache key stable.
  wheels_port=${POKEGEN_WHEELS_PORT:-5080}
  if listening "$wheels_port"; then
    echo "error: port $wheels_port on 127.0.0.1 is in use; set POKEGEN_WHEELS_PORT to a free one" >&2
    exit 1
  fi
  "$PYTHON" -m http.server "$wheels_port" --bind 127.0.0.1 --directory build/docker-wheels \
    >/dev/null 2>&1 &
  wheels_server=$!
  for _ in $(seq 1 50); do listening "$wheels_port" && break; sleep 0.2; done
fi

build_started=$SECONDS
scripts/docker/compose.sh build
stop_wheels_server
echo "Images built in $(( SECONDS - build_started )) s."
scripts/docker/compose.sh up -d --scale "app=$replicas"

port=${PORT:-5000}
if ! "$PYTHON" scripts/wait_ready.py "http://127.0.0.1:$port/readyz" --since "$(( SECONDS - started ))" \
      --timeout "${READY_TIMEOUT:-900}"; then
  echo "The app's last log lines:" >&2
  scripts/docker/compose.sh logs --tail 30 app >&2 || true
  echo "The stack is still up for inspection; make compose-down removes it." >&2
  exit 1
fi
echo "pokegen is up on http://localhost:$port/  (try: curl 'http://localhost:$port/?prefix=Ash')"
