#!/usr/bin/env bash
# `make serve`: uWSGI (the Flask app) and nginx in the foreground, on port 5000.
# Builds the demo model first when the default checkpoint is missing, installs
# nginx when it is missing (as root), and stops both servers on Ctrl-C or SIGTERM.
#
# Settings (environment): those of app/config.py's SETTINGS (the README's
# table); each one left unset gets its default here, so that uWSGI, nginx and
# this script all see the same values. RUN_DIR (run): socket, rendered nginx
# configuration, pid and temp files.
#
# A checkpoint that fails to load is reported once ("error: ..."); the service
# stays up and answers 503 with that reason at / and /readyz (as the containers
# do), with no restart loop, until it is stopped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
started=$SECONDS

export RUN_DIR="${RUN_DIR:-$root/run}"
export POKEGEN_SOCKET="${POKEGEN_SOCKET:-$RUN_DIR/uwsgi.sock}"
export VIRTUAL_ENV="${VIRTUAL_ENV:-$root/.venv}"
# UTF-8 whatever the host's locale: gpt-2-simple opens its tokenizer files
# without an encoding, and uWSGI's embedded Python keeps a C locale's ASCII.
export PYTHONUTF8=1

# A bad setting of the app stops here, with one line, before anything starts.
defaults="$("$VIRTUAL_ENV/bin/python" -m app.config --export-defaults)"
eval "$defaults"

if [ ! -f "$CHECKPOINT_DIR/$RUN_NAME/checkpoint" ]; then
  if [ "$CHECKPOINT_DIR/$RUN_NAME" != "checkpoint/run1" ]; then
    echo "error: no checkpoint in $CHECKPOINT_DIR/$RUN_NAME (train one with train.py)" >&2
    exit 1
  fi
  echo "No checkpoint in checkpoint/run1: building the demo model first (make model)."
  make model
fi

scripts/install-system-packages.sh nginx=nginx-light envsubst=gettext-base
mkdir -p "$RUN_DIR"
# The socket is for nginx alone (mode 660, uwsgi.ini): as root, uWSGI hands it
# to the user nginx's workers run as.
if [ "$(id -u)" = 0 ]; then
  export NGINX_USER="${NGINX_USER:-$(stat -c %U "$root")}"
  export POKEGEN_SOCKET_OWNER="$NGINX_USER"
fi
nginx_conf="$(RUN_DIR="$RUN_DIR/nginx" scripts/render-nginx-config.sh)"
nginx -t -q -p "$RUN_DIR/nginx" -c "$nginx_conf" -e stderr

uwsgi_pid="" nginx_pid="" waiter_pid=""
stop() {
  trap - INT TERM EXIT
  [ -n "$waiter_pid" ] && kill -TERM "$waiter_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
  [ -n "$uwsgi_pid" ] && kill -TERM "$uwsgi_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "pokegen stopped."
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

rm -f "$POKEGEN_SOCKET"
"$VIRTUAL_ENV/bin/uwsgi" --ini uwsgi.ini &
uwsgi_pid=$!
nginx -p "$RUN_DIR/nginx" -c "$nginx_conf" -e stderr -g "daemon off;" &
nginx_pid=$!
echo "pokegen on http://localhost:$PORT/ (loading $CHECKPOINT_DIR/$RUN_NAME; Ctrl-C stops)"

# In the background so that Ctrl-C and SIGTERM are handled at once.
"$VIRTUAL_ENV/bin/python" scripts/wait_ready.py "http://127.0.0.1:$PORT/readyz" \
  --since "$(( SECONDS - started ))" --watch-pid "$uwsgi_pid" --watch-pid "$nginx_pid" &
waiter_pid=$!
readiness=0
wait "$waiter_pid" || readiness=$?
waiter_pid=""
if [ "$readiness" = 2 ]; then
  echo "pokegen is up but cannot generate: / and /readyz answer 503 with this error." >&2
  echo "Fix the checkpoint (or CHECKPOINT_DIR/RUN_NAME) and start again; Ctrl-C stops." >&2
elif [ "$readiness" != 0 ]; then
  exit 1
fi

# Either server ending ends the service; the EXIT trap stops the other one.
status=0
wait -n "$uwsgi_pid" "$nginx_pid" || status=$?
echo "error: a server exited (status $status); stopping" >&2
exit $(( status == 0 ? 1 : status ))
