"""Whether the client of the current request is still there.

A generation answered as one JSON document writes nothing until it ends, so
a client that goes away is only noticed by looking at its connection: the
socket from nginx (or the client) reads as closed. Under uWSGI that is
`uwsgi.connection_fd()`; Werkzeug's development server puts the socket in
the environ. Elsewhere (Flask's test client) the client is taken as present.
"""
from __future__ import annotations

import select
import socket
from typing import Callable


def disconnect_check(environ) -> Callable[[], bool]:
    """A function that answers, without waiting, whether the client has gone."""
    fd = _connection_fd(environ)
    if fd is None:
        return lambda: False
    return lambda: _closed(fd)


def _connection_fd(environ) -> int | None:
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        return sock.fileno()
    try:
        import uwsgi  # present only inside uWSGI
    except ImportError:
        return None
    return uwsgi.connection_fd()


def _closed(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLRDHUP)
    events = poller.poll(0)
    if not events:
        return False
    flags = events[0][1]
    if flags & (select.POLLHUP | select.POLLRDHUP | select.POLLERR | select.POLLNVAL):
        return True
    # Readable: either more bytes (a pipelined request, not our business) or
    # the end of the stream, which recv reports as b"".
    sock = socket.socket(fileno=fd)
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.detach()  # the socket belongs to the server
