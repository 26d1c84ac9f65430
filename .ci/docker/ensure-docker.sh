#!/usr/bin/env bash
# Makes sure a Docker engine and docker-compose are usable, as root on Debian:
# installs docker.io and docker-compose when missing, and starts dockerd when no
# engine answers. An engine that already runs is left exactly as it is.
# The engine started here records its pid in $STARTED_MARKER so that
# stop-docker.sh beside it stops only what this script started.
set -euo pipefail

STARTED_MARKER=${POKEGEN_DOCKERD_MARKER:-/run/pokegen-dockerd.pid}
DOCKERD_LOG=${POKEGEN_DOCKERD_LOG:-/var/log/pokegen-dockerd.log}

die() { echo "error: $*" >&2; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them as root (apt-get install ${missing[*]})"
  echo "Installing Debian packages: ${missing[*]}"
  # Package scripts must not start the engine with its defaults (a bridge
  # network and iptables rules); a policy that forbids service starts exists
  # on most build hosts already, otherwise one is set for the install only.
  local own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

start_engine() {
  [ "$(id -u)" -eq 0 ] || die "no Docker engine is running and starting one needs root"
  echo "Starting dockerd (log: $DOCKERD_LOG)"
  # vfs works on any host filesystem; no bridge and no iptables rules, so
  # containers use host networking or none and nothing touches other networks.
  setsid dockerd --storage-driver=vfs --bridge=none --iptables=false \
    >>"$DOCKERD_LOG" 2>&1 </dev/null &
  echo $! >"$STARTED_MARKER"
  for _ in $(seq 1 60); do
    engine_answers && return 0
    kill -0 "$(cat "$STARTED_MARKER")" 2>/dev/null || break
    sleep 1
  done
  rm -f "$STARTED_MARKER"
  tail -n 20 "$DOCKERD_LOG" >&2 || true
  die "dockerd did not become ready; see $DOCKERD_LOG"
}

main() {
  install_packages
  if engine_answers; then
    return 0
  fi
  start_engine
}

main "$@"
