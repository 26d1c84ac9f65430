#!/usr/bin/env bash
# CI's `make compose-down`: deploy/compose-down.sh with the compose files compose-up.sh beside it
# used, then the Docker engine stopped if ensure-docker.sh started it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."

if docker info >/dev/null 2>&1; then
  source "$here/compose-files.sh"
  deploy/compose-down.sh
fi
"$here/stop-docker.sh"
