#!/usr/bin/env bash
# `make compose-down`: stops and removes the stack's containers, network and socket volume, the
# image versions that newer builds left untagged, and the Docker engine if compose-up started it.
# The current images stay, so the next compose-up is quick.
set -euo pipefail
cd "$(dirname "$0")/../.."

if docker info >/dev/null 2>&1; then
  scripts/docker/compose.sh down --volumes --remove-orphans
  docker image prune -f --filter "label=org.opencontainers.image.title=pokegen-app" >/dev/null
  docker image prune -f --filter "label=org.opencontainers.image.title=pokegen-nginx" >/dev/null
fi
scripts/docker/stop-docker.sh
