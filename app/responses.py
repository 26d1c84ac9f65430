"""How answers are written: JSON, JSONP, Server-Sent Events and JSON errors."""
from __future__ import annotations

import json
from typing import Optional

from flask import Response

from app.engine.types import GenerationResult


def result_payload(result: GenerationResult) -> dict:
    """The answer of `/`; several episodes add `choices`, the first one's fields stay on top."""
    payload = {
        "text": result.text,
        "prefix": result.prefix,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 3),
        "model": result.model,
        "finish_reason": result.finish_reason,
    }
    if len(result.choices) > 1:
        payload["choices"] = [{"text": c.text, "tokens": c.tokens,
                               "finish_reason": c.finish_reason} for c in result.choices]
    return payload


def json_response(payload: dict, status: int = 200, headers: Optional[dict] = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False) + "\n"
    return Response(body, status=status, headers=headers,
                    content_type="application/json; charset=utf-8")


def error_response(status: int, reason: str, *, retry_after: Optional[int] = None,
                   **details) -> Response:
    payload = {"error": reason, "status": status, **details}
    headers = {}
    if retry_after is not None:
        payload["retry_after"] = retry_after
        headers["Retry-After"] = str(retry_after)
    return json_response(payload, status, headers)


def jsonp_response(callback: str, payload: dict) -> Response:
    # The original front end read `sample_text`; ASCII-only JSON keeps U+2028 and
    # U+2029 escaped, and the leading comment defuses content-sniffing attacks.
    body = json.dumps({**payload, "sample_text": payload["text"]}, ensure_ascii=True)
    return Response(f"/**/{callback}({body});\n",
                    content_type="application/javascript; charset=utf-8")


def sse_event(event: str, payload: dict) -> str:
    """One Server-Sent Event whose data is a single line of JSON."""
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"
