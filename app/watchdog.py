"""Ends the process when the engine stays wedged, so that it is started again.

/readyz turns red after STALL_TIMEOUT; a stall that lasts STALL_RESTART_AFTER
is not going to clear. Under uWSGI the master starts a new worker, which loads
the model afresh; in containers, `restart: unless-stopped` covers the rest.
A thread of the worker itself does it, because Docker does not restart a
container for being unhealthy.
"""
from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("pokegen.watchdog")
EXIT_STATUS = 70  # EX_SOFTWARE: an internal error ended the process


def start_watchdog(engine, restart_after: float, interval: float = 1.0,
                   exit=os._exit) -> threading.Thread | None:
    """Watches `engine.stalled_for()`; None (no thread) when restart_after is 0."""
    if restart_after <= 0:
        return None
    thread = threading.Thread(target=_watch, args=(engine, restart_after, interval, exit),
                              name="pokegen-watchdog", daemon=True)
    thread.start()
    return thread


def _watch(engine, restart_after, interval, exit) -> None:
    while True:
        time.sleep(interval)
        try:
            stalled = engine.stalled_for()
        except Exception:  # a watchdog that dies protects nothing
            log.exception("cannot read the engine's state")
            continue
        if stalled >= restart_after:
            log.critical("the generation engine has taken no step for %.0f s with work "
                         "pending: ending the process (pid %d) so that it starts again",
                         stalled, os.getpid())
            logging.shutdown()
            exit(EXIT_STATUS)
            return
