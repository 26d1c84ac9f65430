#!/usr/bin/env bash
# Writes $RUN_DIR/pokegen-upstreams.conf, the servers of nginx's `pokegen_app` upstream, and
# prints "changed" when its content changed (deploy/upstream-watch.sh then reloads nginx).
#   POKEGEN_SOCKET_DIR  a folder shared by replicas: one server per app-*.sock in it (the app
#                       links each replica's socket there, named after its host name, once the
#                       replica has loaded its model)
#   POKEGEN_SOCKET      otherwise, the one socket (make serve)
# max_fails=0: a replica that answers 503 is full, not broken, and must stay in rotation; a dead
# replica's leftover link costs one failed connection before nginx tries the next one.
set -euo pipefail
: "${RUN_DIR:?RUN_DIR must be set}"

sockets=()
if [ -n "${POKEGEN_SOCKET_DIR:-}" ]; then
  shopt -s nullglob
  # app-<host name>.sock is a link that a replica makes once its model has loaded; one whose
  # socket is gone (a replica stopped) is left out.
  for path in "$POKEGEN_SOCKET_DIR"/app-*.sock; do
    if [ -S "$path" ]; then sockets+=("$path"); fi
  done
  # nginx needs one server at least: before any replica is up, a socket that does not exist
  # (every request a JSON 502 until one has loaded its model).
  [ ${#sockets[@]} -gt 0 ] || sockets=("$POKEGEN_SOCKET_DIR/app-none.sock")
else
  sockets=("${POKEGEN_SOCKET:?POKEGEN_SOCKET or POKEGEN_SOCKET_DIR must be set}")
fi

target="$RUN_DIR/pokegen-upstreams.conf"
mkdir -p "$RUN_DIR"
printf 'server unix:%s max_fails=0;\n' "${sockets[@]}" > "$target.tmp"
if cmp -s "$target.tmp" "$target"; then
  rm -f "$target.tmp"
else
  mv "$target.tmp" "$target"
  echo changed
fi
