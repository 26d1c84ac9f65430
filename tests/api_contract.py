"""The API's promises as app/openapi.yaml states them, checked on answers; and
two ways to put a request to the service byte for byte: in-process (the Flask
app, called as a WSGI server calls it) or over a socket (nginx + uWSGI)."""
from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass

import jsonschema_rs
import yaml

from app.engine.types import DEFAULT_PREFIX

DESCRIPTION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "app", "openapi.yaml")
with open(DESCRIPTION, encoding="utf-8") as _file:
    DOCUMENT = yaml.safe_load(_file)
SCHEMAS = DOCUMENT["components"]["schemas"]


def _resolve(node: dict) -> dict:
    """Follows a local `$ref` ("#/components/...") of the document."""
    while "$ref" in node:
        target = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def parameter_schemas(path: str) -> dict[str, dict]:
    """Query parameter name -> its schema, for one path's GET."""
    parameters = (_resolve(p) for p in DOCUMENT["paths"][path]["get"]["parameters"])
    return {p["name"]: p["schema"] for p in parameters}


GENERATION_PARAMETERS = parameter_schemas("/")
CALLBACK = re.compile(GENERATION_PARAMETERS["callback"]["pattern"])
TRUE_WORDS = ("1", "true", "yes", "on")


# ------------------------------------------------------------- transports

@dataclass(frozen=True)
class Answer:
    target: bytes  # the request target sent, shown when a property fails
    status: int
    headers: dict  # lower-case names
    body: bytes

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self) -> str:
        return (f"Answer(to {self.target[:300]!r}: {self.status}, {self.media_type!r}, "
                f"{self.body[:300]!r})")


def ask_app(client, target: bytes, method: str = "GET") -> Answer:
    """What a WSGI server hands the app for this request target: the path
    percent-decoded, the query string as sent, both as latin-1 text."""
    path, _, query = target.partition(b"?")
    response = client.open(method=method, environ_overrides={
        "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "REQUEST_URI": target.decode("latin-1"),
    })
    return Answer(target, response.status_code,
                  {k.lower(): v for k, v in response.headers.items()}, response.get_data())


def ask_stack(port: int, target: bytes, method: str = "GET", timeout: float = 120.0) -> Answer:
    """Sends the request target as it is (an HTTP client library would
    re-quote it) to 127.0.0.1:port and reads the whole answer."""
    request = (method.encode("ascii") + b" " + target + b" HTTP/1.1\r\n"
               b"Host: 127.0.0.1\r\nAccept: */*\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        return Answer(target, response.status,
                      {k.lower(): v for k, v in response.getheaders()}, body)


# ----------------------------------------------------------------- checks

def check_error(answer: Answer) -> dict:
    """Every refusal is JSON with a reason, whoever answers it (app or nginx)."""
    assert answer.media_type == "application/json", answer
    body = answer.json()
    _validate(SCHEMAS["Error"], body, answer)
    assert body["status"] == answer.status and body["error"].strip(), answer
    assert answer.headers.get("access-control-allow-origin") == "*", answer
    # The reason may quote the client's own words (an unknown parameter's
    # name), so look for what a Python traceback really prints.
    assert b"Traceback (most recent call last)" not in answer.body, answer
    return body


def check_documented(path: str, answer: Answer):
    """The status and media type are documented for `path`, and a JSON body
    validates against the documented schema. Returns the (parsed) body."""
    responses = DOCUMENT["paths"][path]["get"]["responses"]
    assert str(answer.status) in responses, f"{answer!r}: status not documented for {path}"
    response = _resolve(responses[str(answer.status)])
    content = response["content"]
    assert answer.media_type in content or "*/*" in content, \
        f"{answer!r}: media type not documented for {path}"
    for name, header in response.get("headers", {}).items():
        value = answer.headers.get(name.lower())
        if value is not None:
            _validate(_resolve(header)["schema"], int(value) if value.isdigit() else value, answer)
    if answer.media_type != "application/json":
        return answer.body
    body = answer.json()
    _validate(_resolve(content["application/json"]["schema"]), body, answer)
    return body


def value_is_documented(name: str, raw: str) -> bool:
    """Whether a query value satisfies its parameter's documented schema."""
    schema = GENERATION_PARAMETERS[name]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        value = float(raw)  # raises on text the API should never have taken for a number
        above = (value > schema["exclusiveMinimum"] if "exclusiveMinimum" in schema
                 else value >= schema.get("minimum", -math.inf))
        return (math.isfinite(value) and above and value <= schema["maximum"]
                and (kind == "number" or value == int(value)))
    if kind == "boolean":
        return raw.strip().lower() in TRUE_WORDS + ("0", "false", "no", "off")
    # The patterns are anchored; fullmatch keeps Python's "$" from passing a final newline.
    return (re.fullmatch(schema.get("pattern", ".*"), raw, re.S) is not None
            and len(raw) <= schema.get("maxLength", math.inf))


def effective_prefix(pairs) -> str:
    sent = dict(pairs)
    prefix = sent.get("prefix", sent.get("sample"))
    return prefix if prefix and prefix.strip() else DEFAULT_PREFIX


def check_generation(answer: Answer, pairs, engine=None):
    """What holds for every answer of `/` to a query, whatever the query:
    a JSON refusal naming a parameter that was sent, or an episode for a query
    the description allows, as JSON or as JSONP for a safe name only."""
    names = [name for name, _ in pairs]
    assert answer.status in (200, 400), answer
    if answer.status == 400:
        assert check_error(answer)["parameter"] in names, answer
        return None
    assert len(set(names)) == len(names), f"{answer!r}: a repeated parameter was taken"
    for name, value in pairs:
        assert name in GENERATION_PARAMETERS, f"{answer!r}: unknown {name!r} was taken"
        assert value_is_documented(name, value), f"{answer!r}: {name}={value!r} was taken"
    sent, prefix = dict(pairs), effective_prefix(pairs)
    if engine is not None:  # the context window is the one limit the schema cannot state
        assert engine.count_tokens(prefix) + int(sent["length"]) <= engine.info["hparams"]["n_ctx"]
    if "callback" in sent:
        body = check_jsonp(answer, sent["callback"])
    else:
        assert answer.media_type == "application/json", answer
        body = check_documented("/", answer)
    assert body["prefix"] == prefix and body["tokens"] <= int(sent["length"]), answer
    if sent.get("include_prefix", "1").strip().lower() in TRUE_WORDS:
        assert body["text"].startswith(prefix), answer
    return body


def check_jsonp(answer: Answer, callback: str) -> dict:
    assert CALLBACK.fullmatch(callback), f"{answer!r}: JSONP for an unsafe name"
    assert answer.media_type == "application/javascript", answer
    check_documented("/", answer)
    match = re.fullmatch(rb"/\*\*/([^(]*)\((.*)\);\n", answer.body, re.S)
    assert match and match.group(1).decode() == callback, answer
    assert match.group(2).isascii(), answer  # U+2028 and friends escaped: valid JavaScript
    payload = json.loads(match.group(2))
    assert payload.pop("sample_text") == payload["text"], answer
    return check_episode(payload, answer)


def check_episode(body: dict, answer: Answer) -> dict:
    _validate(SCHEMAS["Episode"], body, answer)
    return body


def _validate(schema: dict, instance, answer: Answer) -> None:
    errors = [error.message for error in jsonschema_rs.validator_for(schema).iter_errors(instance)]
    assert not errors, f"{answer!r} breaks the documented schema: {errors}"
