"""The HTTP API: generation as JSON, JSONP or a stream of events, plus probes,
metrics and the model card. Validation happens before anything reaches the
engine, and refusals are answered at once with a JSON reason.

No generation outlives its client: every route cancels it when the client
goes away (closed connection, a HEAD answered without a body) or its
deadline passes.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, g, request, send_from_directory
from werkzeug.exceptions import HTTPException

from app.client_connection import disconnect_check
from app.engine.types import Busy, ClientBusy, ModelUnavailable
from app.metrics import CONTENT_TYPE_LATEST
from app.responses import (error_response, json_response, jsonp_response, result_payload,
                           sse_event)
from app.validation import ValidationError, parse_generation_query

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)

# How often a request waiting for its whole episode looks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.2

# The page forbids inline script and every other origin; nginx sends the same.
PAGE_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                        "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                        "form-action 'self'; frame-ancestors 'none'")


def service():
    return current_app.extensions["pokegen"]


@api.get("/")
def generate():
    if not request.query_string and _prefers_html():
        page = current_app.send_static_file("index.html")
        page.headers["Content-Security-Policy"] = PAGE_SECURITY_POLICY
        return page
    query = parse_generation_query(_query_args())
    generation = service().submit(query.request, client=request.remote_addr)
    try:
        result = _wait_for_result(generation)
    except TimeoutError:
        return error_response(504, "the generation took longer than the request timeout")
    except ClientGone:
        return error_response(499, "the client closed the connection")
    service().metrics.tokens.inc(generated_tokens(result))
    payload = result_payload(result)
    if query.callback:
        return jsonp_response(query.callback, payload)
    return json_response(payload)


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


def _wait_for_result(generation):
    """The generation's result; cancels it and raises TimeoutError or
    ClientGone when the deadline passes or the client goes away first."""
    deadline = g.started + service().config.request_timeout
    client_gone = disconnect_check(request.environ)
    while True:
        try:
            return generation.result(timeout=max(0.0, min(DISCONNECT_POLL_SECONDS,
                                                           deadline - time.monotonic())))
        except TimeoutError:
            pass
        if client_gone():
            generation.cancel()
            raise ClientGone()
        if time.monotonic() >= deadline:
            generation.cancel()
            raise TimeoutError("generation still running")


@api.get("/stream")
def stream():
    query = parse_generation_query(_query_args(), allow_callback=False)
    generation = service().submit(query.request, client=request.remote_addr)
    # Wait for the first piece before answering, so that a queue wait that runs
    # out is still a plain 503 with Retry-After rather than an event.
    remaining = g.started + service().config.request_timeout - time.monotonic()
    pieces = generation.indexed_pieces(timeout=max(0.0, remaining))
    try:
        first = next(pieces, None)
    except TimeoutError:
        generation.cancel()
        return error_response(504, "the generation took longer than the request timeout")
    except BaseException:
        generation.cancel()
        raise
    outcome = {"finished": False}
    response = Response(_events(service(), generation, first, pieces, outcome),
                        content_type="text/event-stream; charset=utf-8",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    # Closing the response (the client went away, an error, or a HEAD whose
    # body is never read, so the events never start) cancels an unfinished
    # generation and frees its slot.
    response.call_on_close(lambda: outcome["finished"] or generation.cancel())
    return response


def _events(svc, generation, first, pieces, outcome):
    """Pieces as they are sampled (with their episode's index when there are
    several), then the JSON of `/`."""
    several = generation.request.n > 1

    def piece_event(index, text):
        return sse_event("piece", {"index": index, "text": text} if several else {"text": text})
    try:
        if first is not None:
            yield piece_event(*first)
        for index, text in pieces:
            yield piece_event(index, text)
        result = generation.result(timeout=svc.config.request_timeout)
        outcome["finished"] = True
        svc.metrics.tokens.inc(generated_tokens(result))
        yield sse_event("done", result_payload(result))
    except Busy as busy:
        yield sse_event("error", {"error": busy.reason, "status": 503,
                                  "retry_after": busy.retry_after})
    except TimeoutError:
        yield sse_event("error", {"error": "the generation took longer than the request "
                                           "timeout", "status": 504})
    except Exception:
        log.exception("generation failed while streaming")
        yield sse_event("error", {"error": "the generation failed", "status": 500})


def generated_tokens(result) -> int:
    return sum(choice.tokens for choice in result.choices)


@api.get("/healthz")
def healthz():
    return json_response({"status": "alive"})


@api.get("/readyz")
def readyz():
    engine = service().engine
    if engine.state == "ready":
        stalled = service().stalled()
        if stalled:
            return error_response(503, stalled, state="stalled",
                                  retry_after=service().config.loading_retry_after)
        return json_response({"status": "ready", "model": engine.model_name})
    if engine.state == "failed":
        return error_response(503, f"the model failed to load: {engine.error}",
                              state="failed")
    return error_response(503, "the model is still loading", state=engine.state,
                          retry_after=service().config.loading_retry_after)


@api.get("/info")
def info():
    return json_response(service().info())


@api.get("/metrics")
def metrics():
    return Response(service().metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


@api.get("/openapi.yaml")
def openapi_description():
    return send_from_directory(current_app.root_path, "openapi.yaml",
                               mimetype="application/yaml")


@api.app_errorhandler(ValidationError)
def bad_parameter(error: ValidationError):
    return error_response(400, error.reason, parameter=error.parameter)


@api.app_errorhandler(Busy)
def busy(error: Busy):
    # 429: this client holds its share already; 503: the service is full for everyone.
    status = 429 if isinstance(error, ClientBusy) else 503
    return error_response(status, error.reason, retry_after=max(1, int(error.retry_after)))


@api.app_errorhandler(ModelUnavailable)
def model_unavailable(error: ModelUnavailable):
    return error_response(503, str(error))


@api.app_errorhandler(HTTPException)
def http_error(error: HTTPException):
    # Keeps headers such as Allow on a 405, with a JSON body instead of HTML.
    response = error_response(error.code or 500, _short_reason(error))
    for name, value in error.get_response().headers:
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


@api.app_errorhandler(Exception)
def internal_error(error: Exception):
    log.exception("unhandled error")
    return error_response(500, "internal error")


def _short_reason(error: HTTPException) -> str:
    if error.code == 404:
        return f"no such path: {request.path}"
    if error.code == 405:
        return f"method {request.method} is not allowed for {request.path}"
    return (error.name or "error").lower()


def _query_args():
    # Werkzeug decodes the raw query string as strict UTF-8: other bytes sent
    # unencoded are the client's mistake, not a crash.
    try:
        return request.args
    except UnicodeDecodeError:
        raise ValidationError("the query string is not UTF-8: percent-encode every other "
                              "byte") from None


def _prefers_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"
