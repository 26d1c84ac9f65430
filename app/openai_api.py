"""An OpenAI-compatible API under /v1: `POST /v1/completions` (OpenAI's
legacy completions, streamed or not) and `GET /v1/models`, so that OpenAI's
own clients can write episodes. Its errors come in OpenAI's shape (see
`refusal` in app/api.py). Like every route, a completion is cancelled when
its client goes away.
"""
from __future__ import annotations

import datetime
import logging
import time
import uuid

from flask import Blueprint, current_app, request

from app.engine.types import Busy
from app.openai_request import CompletionRequest, parse_completion_request
from app.openai_responses import (DONE, FINISH_REASONS, choice, chunk, completion, data_line,
                                  error_object, error_response, model_list, usage)
from app.request_body import json_body
from app.responses import json_response
from app.validation import ValidationError
from app.waiting import ClientGone, deadline, first_piece, stream_response, wait_for_result

log = logging.getLogger(__name__)
openai_api = Blueprint("openai_api", __name__, url_prefix="/v1")
SHUTTING_DOWN = "the service is shutting down: the completion was cut short"


def service():
    return current_app.extensions["pokegen"]


@openai_api.get("/models")
def models():
    return json_response(model_list(service().engine.model_name, _created()))


@openai_api.post("/completions")
def completions():
    asked = parse_completion_request(json_body(request))
    svc = service()
    served = svc.engine.model_name
    # While the model loads its name may still change: the 503 of submit() comes first.
    if svc.engine.state == "ready" and asked.model != served:
        raise ValidationError(f"the model {asked.model!r} does not exist: this server serves "
                              f"{served!r} (GET /v1/models)", "model", status=404,
                              code="model_not_found")
    generation = svc.submit(asked.generation, client=request.remote_addr,
                            prefix_name="prompt", length_name="max_tokens")
    answer = _Answer(asked, served)
    until = deadline(svc.config.request_timeout)
    if asked.stream:
        return _stream(svc, generation, answer, until)
    try:
        result = wait_for_result(generation, until)
    except TimeoutError:
        return error_response(504, "the completion took longer than the request timeout")
    except ClientGone:
        return error_response(499, "the client closed the connection")
    completion_tokens = sum(c.tokens for c in result.choices)
    svc.metrics.tokens.inc(completion_tokens)
    reasons = [FINISH_REASONS.get(c.finish_reason) for c in result.choices]
    if None in reasons:
        return error_response(503, SHUTTING_DOWN, retry_after=svc.config.loading_retry_after)
    return json_response(completion(answer.id, answer.created, served,
                                    [choice(i, c.text, reason) for i, (c, reason)
                                     in enumerate(zip(result.choices, reasons))],
                                    usage(result.prompt_tokens, completion_tokens)))


class _Answer:
    """What every part of one completion's answer repeats."""

    def __init__(self, asked: CompletionRequest, model: str):
        self.asked, self.model = asked, model
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(self, choices: list[dict], usage_=None) -> str:
        return chunk(self.id, self.created, self.model, choices, self.asked.include_usage, usage_)


def _stream(svc, generation, answer: _Answer, until: float):
    pieces = generation.indexed_pieces(timeout=max(0.0, until - time.monotonic()))
    try:
        first = first_piece(pieces, generation)
    except TimeoutError:
        return error_response(504, "the completion took longer than the request timeout")
    outcome = {"finished": False}
    return stream_response(_chunks(svc, generation, answer, first, pieces, outcome), generation,
                           outcome, "text/event-stream; charset=utf-8")


def _chunks(svc, generation, answer: _Answer, first, pieces, outcome):
    """Text chunks as they are sampled, each naming its choice's index, a last
    one per choice with its finish reason, the usage when asked for, then
    [DONE]; an error object when it fails."""
    try:
        if first is not None:
            yield answer.chunk([choice(*first, None)])
        for index, piece in pieces:
            yield answer.chunk([choice(index, piece, None)])
        result = generation.result(timeout=svc.config.request_timeout)
        outcome["finished"] = True
        completion_tokens = sum(c.tokens for c in result.choices)
        svc.metrics.tokens.inc(completion_tokens)
        reasons = [FINISH_REASONS.get(c.finish_reason) for c in result.choices]
        if None in reasons:
            yield data_line(error_object(503, SHUTTING_DOWN))
            return
        for index, reason in enumerate(reasons):
            yield answer.chunk([choice(index, "", reason)])
        if answer.asked.include_usage:
            yield answer.chunk([], usage(result.prompt_tokens, completion_tokens))
        yield DONE
    except Busy as busy:
        yield data_line(error_object(503, busy.reason))
    except TimeoutError:
        yield data_line(error_object(504, "the completion took longer than the request timeout"))
    except Exception:
        log.exception("completion failed while streaming")
        yield data_line(error_object(500, "the completion failed"))


def _created() -> int:
    """When the served model was trained (its model card's date), in Unix
    seconds; 0 when there is no card (or the model is still loading)."""
    card = service().engine.info.get("card") or {}
    try:
        return int(datetime.datetime.fromisoformat(card["date"]).timestamp())
    except (KeyError, TypeError, ValueError):
        return 0
