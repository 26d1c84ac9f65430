"""OpenAI's shapes: the completion object, its streamed chunks (Server-Sent
Events of bare `data:` lines, ending with `data: [DONE]`), the model list and
the error object."""
from __future__ import annotations

import json
from typing import Optional

from flask import Response

from app.responses import json_response

# Our finish reasons in OpenAI's words: every end the model or a stop string
# makes is "stop"; all tokens written is "length".
FINISH_REASONS = {"length": "length", "stop": "stop", "end_of_text": "stop"}
# The error `type` OpenAI gives each status.
ERROR_TYPES = {429: "rate_limit_error", 500: "server_error", 502: "server_error",
               503: "server_error", 504: "server_error"}
DEFAULT_CODES = {429: "rate_limit_exceeded"}


def completion(completion_id: str, created: int, model: str, choices: list[dict],
               usage: dict) -> dict:
    return {"id": completion_id, "object": "text_completion", "created": created,
            "model": model, "choices": choices, "usage": usage}


def choice(index: int, text: str, finish_reason: Optional[str]) -> dict:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chunk(completion_id: str, created: int, model: str, choices: list[dict],
          with_usage: bool, usage_: Optional[dict] = None) -> str:
    """One streamed chunk: a completion object of this part. With usage asked
    for, every chunk carries `usage` (null until the last), as OpenAI's do."""
    payload = {"id": completion_id, "object": "text_completion", "created": created,
               "model": model, "choices": choices}
    if with_usage:
        payload["usage"] = usage_
    return data_line(payload)


def data_line(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


def model_list(model: str, created: int) -> dict:
    return {"object": "list", "data": [model_object(model, created)]}


def model_object(model: str, created: int) -> dict:
    return {"id": model, "object": "model", "created": created, "owned_by": "pokegen"}


def error_object(status: int, message: str, *, param: Optional[str] = None,
                 code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code or DEFAULT_CODES.get(status)}}


def error_response(status: int, message: str, *, param: Optional[str] = None,
                   code: Optional[str] = None, retry_after: Optional[int] = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response(error_object(status, message, param=param, code=code), status, headers)
