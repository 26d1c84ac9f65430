#!/usr/bin/env bash
# CI's `make compose-up`, on a build machine that is not a normal Docker host: installs Docker and
# starts its engine when missing (ensure-docker.sh), builds the base image with debootstrap when
# Docker Hub cannot be reached (ensure-base-image.sh), serves the image build the Python packages
# this machine's pip downloads when containers cannot use PyPI themselves (fetch-wheels.sh), and
# picks the compose files for an engine without a bridge network (compose-files.sh). Then it runs
# the compose-up that users run, deploy/compose-up.sh, with the same settings.
#
# Settings (environment), besides deploy/compose-up.sh's:
#   POKEGEN_WHEELS       auto (default), 1 or 0: install packages downloaded by this machine's pip
#   POKEGEN_WHEELS_PORT  the loopback port they are served on while the images build (5080)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

"$here/ensure-docker.sh"
"$here/ensure-base-image.sh"

if [ "${POKEGEN_WHEELS:-auto}" = auto ]; then
  if "$PYTHON" "$here/pypi_trusted_publicly.py"; then
    POKEGEN_WHEELS=0
  else
    echo "Containers cannot use PyPI from this host: the image gets packages downloaded here."
    POKEGEN_WHEELS=1
  fi
fi
export POKEGEN_WHEELS
source "$here/compose-files.sh"

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
  "$here/fetch-wheels.sh"
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

deploy/compose-up.sh
