#!/usr/bin/env bash
# Runs docker-compose on pokegen's stack with the compose files this host needs:
#   docker-compose.yml                     always
#   docker-compose.override.yml            nginx's published port, when the engine has a bridge
#   docker-compose.host-network.yml        instead, when it has none (dockerd --bridge=none)
#   docker-compose.checkpoint-volume.yml   when POKEGEN_CHECKPOINT=volume (mount CHECKPOINT_DIR)
#   docker-compose.local-wheels.yml        when POKEGEN_WHEELS=1 (set by compose-up.sh if needed)
# A COMPOSE_FILE already set in the environment is used as it is.
# Usage: scripts/docker/compose.sh <docker-compose arguments>, e.g. `ps` or `logs -f app`.
set -euo pipefail
cd "$(dirname "$0")/../.."

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pokegen}

if [ -z "${COMPOSE_FILE:-}" ]; then
  files=docker-compose.yml
  if docker network inspect bridge >/dev/null 2>&1; then
    files+=:docker-compose.override.yml
  else
    files+=:docker-compose.host-network.yml
  fi
  case "${POKEGEN_CHECKPOINT:-baked}" in
    baked) ;;
    volume) files+=:docker-compose.checkpoint-volume.yml ;;
    *) echo "error: POKEGEN_CHECKPOINT must be 'baked' or 'volume', got '$POKEGEN_CHECKPOINT'" >&2
       exit 2 ;;
  esac
  if [ "${POKEGEN_WHEELS:-0}" = 1 ]; then
    files+=:docker-compose.local-wheels.yml
  fi
  export COMPOSE_FILE=$files
fi

exec docker-compose "$@"
