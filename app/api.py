"""The HTTP API: generation as JSON, JSONP or a stream of events, asked by a
query (GET) or a JSON body (POST), plus probes, metrics and the model card.
Validation happens before anything reaches the engine, and refusals are
answered at once with a JSON reason (in OpenAI's shape under /v1/, whose
routes are in app/openai_api.py).

No generation outlives its client: every route cancels it when the client
goes away (closed connection, a HEAD answered without a body) or its
deadline passes.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, request, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from app import openai_responses
from app.engine.types import Busy, ClientBusy, ModelUnavailable
from app.request_body import json_body
from app.responses import (error_response, json_response, jsonp_response, result_payload,
                           sse_event)
from app.validation import ValidationError, parse_generation_body, parse_generation_query
from app.waiting import ClientGone, deadline, first_piece, stream_response, wait_for_result

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)
OPENAI_PREFIX = "/v1/"

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
    return _episode(query.request, query.callback)


@api.post("/")
def generate_from_body():
    return _episode(parse_generation_body(json_body(request)))


def _episode(generation_request, callback=None):
    generation = service().submit(generation_request, client=request.remote_addr)
    try:
        result = wait_for_result(generation, deadline(service().config.request_timeout))
    except TimeoutError:
        return error_response(504, "the generation took longer than the request timeout")
    except ClientGone:
        return error_response(499, "the client closed the connection")
    service().metrics.tokens.inc(generated_tokens(result))
    payload = result_payload(result)
    if callback:
        return jsonp_response(callback, payload)
    return json_response(payload)


@api.get("/stream")
def stream():
    return _event_stream(parse_generation_query(_query_args(), allow_callback=False).request)


@api.post("/stream")
def stream_from_body():
    return _event_stream(parse_generation_body(json_body(request)))


def _event_stream(generation_request):
    generation = service().submit(generation_request, client=request.remote_addr)
    remaining = deadline(service().config.request_timeout) - time.monotonic()
    # Wait for the first piece before answering, so that a queue wait that runs
    # out is still a plain 503 with Retry-After rather than an event.
    pieces = generation.indexed_pieces(timeout=max(0.0, remaining))
    try:
        first = first_piece(pieces, generation)
    except TimeoutError:
        return error_response(504, "the generation took longer than the request timeout")
    outcome = {"finished": False}
    return stream_response(_events(service(), generation, first, pieces, outcome), generation,
                           outcome, "text/event-stream; charset=utf-8")


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
    return refusal(error.status, error.reason, parameter=error.parameter, code=error.code)


@api.app_errorhandler(Busy)
def busy(error: Busy):
    # 429: this client holds its share already; 503: the service is full for everyone.
    status = 429 if isinstance(error, ClientBusy) else 503
    return refusal(status, error.reason, retry_after=max(1, int(error.retry_after)))


@api.app_errorhandler(ModelUnavailable)
def model_unavailable(error: ModelUnavailable):
    return refusal(503, str(error))


@api.app_errorhandler(HTTPException)
def http_error(error: HTTPException):
    # Keeps headers such as Allow on a 405, with a JSON body instead of HTML.
    response = refusal(error.code or 500, _short_reason(error))
    for name, value in error.get_response().headers:
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


@api.app_errorhandler(Exception)
def internal_error(error: Exception):
    log.exception("unhandled error")
    return refusal(500, "internal error")


def refusal(status: int, reason: str, *, parameter=None, code=None, retry_after=None):
    """A JSON refusal: in OpenAI's error shape under /v1/, in pokegen's elsewhere."""
    if request.path.startswith(OPENAI_PREFIX):
        return openai_responses.error_response(status, reason, param=parameter, code=code,
                                               retry_after=retry_after)
    details = {"parameter": parameter} if parameter or status == 400 else {}
    return error_response(status, reason, retry_after=retry_after, **details)


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
