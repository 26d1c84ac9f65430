# shellcheck shell=bash
# Sourced by the CI scripts beside it: sets COMPOSE_FILE (unless already set) to the compose files
# this build machine needs, and COMPOSE_PROJECT_NAME (pokegen unless set):
#   docker-compose.yml                            always
#   docker-compose.override.yml                   nginx's published port, when there is a bridge
#   .ci/docker/docker-compose.host-network.yml    instead, when there is none (--bridge=none)
#   deploy/docker-compose.checkpoint-volume.yml   when POKEGEN_CHECKPOINT=volume
#   .ci/docker/docker-compose.local-wheels.yml    when POKEGEN_WHEELS=1
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pokegen}
if [ -z "${COMPOSE_FILE:-}" ]; then
  COMPOSE_FILE=docker-compose.yml
  if docker network inspect bridge >/dev/null 2>&1; then
    COMPOSE_FILE+=:docker-compose.override.yml
  else
    COMPOSE_FILE+=:.ci/docker/docker-compose.host-network.yml
  fi
  if [ "${POKEGEN_CHECKPOINT:-baked}" = volume ]; then
    COMPOSE_FILE+=:deploy/docker-compose.checkpoint-volume.yml
  fi
  if [ "${POKEGEN_WHEELS:-0}" = 1 ]; then
    COMPOSE_FILE+=:.ci/docker/docker-compose.local-wheels.yml
  fi
  export COMPOSE_FILE
fi
