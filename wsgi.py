"""uWSGI's entry point (see uwsgi.ini): the application, configured from the
environment. uWSGI loads it after forking (lazy-apps), so the engine's session
and threads live in the process that serves."""
import atexit
import logging
import os
import signal
import sys

from app import create_app
from app.config import ConfigError

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

try:
    application = create_app()
except ConfigError as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    # A bad setting stays bad: stop uWSGI's master (die-on-term) rather than
    # let it respawn this worker forever.
    if "uwsgi" in sys.modules:
        os.kill(os.getppid(), signal.SIGTERM)
    raise SystemExit(1)


def _close_engine():
    # Finish or refuse what is in flight and stop the engine's threads.
    application.extensions["pokegen"].engine.close()
    logging.info("engine stopped")


# uWSGI skips Python's atexit (skip-atexit-teardown) but calls uwsgi.atexit
# when a worker ends gracefully; elsewhere Python's atexit does it.
if "uwsgi" in sys.modules:
    import uwsgi
    uwsgi.atexit = _close_engine
else:
    atexit.register(_close_engine)


def _warn_when_threads_are_short(config):
    # Each generating or waiting request holds a uWSGI thread; with too few, the
    # extra requests wait in the socket backlog instead of getting a quick 503.
    import uwsgi
    threads = int(uwsgi.opt.get("threads", b"1"))
    needed = config.generation_concurrency + config.queue_size + 2
    if threads < needed:
        logging.warning("uWSGI has %d threads but GENERATION_CONCURRENCY + QUEUE_SIZE + 2 = %d: "
                        "raise threads in uwsgi.ini", threads, needed)


if "uwsgi" in sys.modules:
    _warn_when_threads_are_short(application.extensions["pokegen"].config)
    if os.environ.get("POKEGEN_SOCKET_DIR"):
        from app.replica_socket import join_when_settled
        join_when_settled(application.extensions["pokegen"].engine, os.environ["POKEGEN_SOCKET_DIR"])
