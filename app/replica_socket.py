"""A replica's place in nginx's rotation, when replicas share a socket folder.

With POKEGEN_SOCKET_DIR, uWSGI binds a hidden socket `.app-<host>.sock` in the
shared folder and nginx sends requests to every `app-<host>.sock` link there
(scripts/render-nginx-upstreams.sh). uWSGI removes this replica's link when it
(re)starts; the app makes it again once its model has loaded or failed to, so
that a replica still loading takes no request it could only answer "loading",
and nginx meanwhile sends them to the others.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger("pokegen")


def link_name(host: str | None = None) -> str:
    return f"app-{host or socket.gethostname()}.sock"


def join_when_settled(engine, folder: str, host: str | None = None) -> threading.Thread:
    """Makes the link in a thread of its own, once the engine is ready or failed."""
    def join():
        engine.wait_ready(None)
        link = os.path.join(folder, link_name(host))
        temporary = f"{link}.{os.getpid()}.tmp"
        os.symlink("." + link_name(host), temporary)  # relative: it resolves in every container
        os.replace(temporary, link)
        log.info("in nginx's rotation as %s (model %s)", link, engine.state)

    thread = threading.Thread(target=join, name="pokegen-replica-link", daemon=True)
    thread.start()
    return thread
