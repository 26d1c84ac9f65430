#!/usr/bin/env bash
# `make compose-down`: stops and removes the stack's containers, network and socket volume, and
# the image versions that newer builds left untagged. The current images stay, so the next
# compose-up is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pokegen}

docker-compose down --volumes --remove-orphans
docker image prune -f --filter "label=org.opencontainers.image.title=pokegen-app" >/dev/null
docker image prune -f --filter "label=org.opencontainers.image.title=pokegen-nginx" >/dev/null
