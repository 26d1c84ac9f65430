"""Waiting for a generation on behalf of an HTTP request, for every route
alike: each wait ends by the request's deadline, and a generation whose client
has gone away (or whose answer will never be read) is cancelled.
"""
from __future__ import annotations

import time

from flask import Response, g, request

from app.client_connection import disconnect_check

# How often a request waiting for its whole answer looks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.2


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


def deadline(request_timeout: float) -> float:
    """When the current request's time is up (time.monotonic())."""
    return g.started + request_timeout


def wait_for_result(generation, until: float):
    """The generation's result; cancels it and raises TimeoutError or
    ClientGone when `until` passes or the client goes away first."""
    client_gone = disconnect_check(request.environ)
    while True:
        try:
            return generation.result(timeout=max(0.0, min(DISCONNECT_POLL_SECONDS,
                                                           until - time.monotonic())))
        except TimeoutError:
            pass
        if client_gone():
            generation.cancel()
            raise ClientGone()
        if time.monotonic() >= until:
            generation.cancel()
            raise TimeoutError("generation still running")


def first_piece(pieces, generation):
    """The first item of `pieces` (None when there is none), read before a
    stream is answered, so that a queue wait that runs out is still a plain
    503 with Retry-After rather than an event. Cancels the generation on any
    error (TimeoutError when the deadline passed)."""
    try:
        return next(pieces, None)
    except BaseException:
        generation.cancel()
        raise


def stream_response(events, generation, outcome: dict, content_type: str) -> Response:
    """A streamed answer whose closing (the client went away, an error, or a
    HEAD whose body is never read, so the events never start) cancels the
    generation unless `outcome["finished"]` was set, and frees its slot."""
    response = Response(events, content_type=content_type,
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.call_on_close(lambda: outcome["finished"] or generation.cancel())
    return response
