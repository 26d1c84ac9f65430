"""Turns a query string or a JSON body into a `GenerationRequest`, or one
clear reason why not.

Parsing is strict on purpose: "1.5" is not a length, "nan" is not a
temperature, a misspelt parameter is an error rather than silently ignored.
Both ways in share one table of ranges (`SETTINGS`); only the reading of a
value differs: text from a query, a typed value from JSON.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Optional

from app.engine.types import DEFAULT_PREFIX, MAX_SEED, GenerationRequest

MAX_PREFIX_CHARS = 1000
MAX_LENGTH = 1023
MAX_TEMPERATURE = 5.0
MAX_TOP_K = 1000
MAX_STOPS = 4
MAX_STOP_CHARS = 64
REPETITION_PENALTY_RANGE = (0.5, 2.0)  # 1.0 is off; below 1 favours repeating
PENALTY_RANGE = (-2.0, 2.0)  # frequency_penalty and presence_penalty, as OpenAI
MAX_NO_REPEAT_NGRAM = 10
MAX_N = 8
# Repetition control when the query leaves it out, for `/`, `/stream` and so the
# page: chosen on the demo model with benchmarks/repetition.py (docs/benchmarks.md).
# GenerationRequest's own defaults stay neutral.
REPETITION_DEFAULTS = {"no_repeat_ngram_size": 4}
CALLBACK_PATTERN = re.compile(r"[A-Za-z_$][0-9A-Za-z_$.]{0,63}")

GENERATION_PARAMETERS = ("prefix", "sample", "length", "temperature", "top_k", "top_p",
                         "seed", "truncate", "include_prefix", "stop", "repetition_penalty",
                         "frequency_penalty", "presence_penalty", "no_repeat_ngram_size", "n")
REPEATABLE = ("stop",)
# `_` is the cache-buster jQuery adds to JSONP calls of the original front end.
JSONP_PARAMETERS = ("callback", "_")

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
# One way to match each number: "[0-9]+\.?[0-9]*" would try every split of a
# long digit run, quadratic time on a 16 kB value that does not parse.
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ValidationError(ValueError):
    """A bad request: answered with `status` (400 unless the body itself is
    refused: 413, 415) and this reason. `code` names the fault for machines,
    as OpenAI's error shape does (for example "context_length_exceeded")."""

    def __init__(self, reason: str, parameter: Optional[str] = None, status: int = 400,
                 code: Optional[str] = None):
        super().__init__(reason)
        self.reason = reason
        self.parameter = parameter
        self.status = status
        self.code = code


# ------------------------------------------------------- ranges, read two ways

@dataclass(frozen=True)
class Integer:
    low: int
    high: int

    def from_text(self, name: str, raw: str) -> int:
        # The length cap keeps int() away from its limit on digit strings.
        if len(raw) > 30 or not _INTEGER.fullmatch(raw.strip()):
            raise self._error(name, repr(raw))
        return self._checked(name, int(raw), repr(raw))

    def from_json(self, name: str, value) -> int:
        if type(value) is not int:  # bool is an int to Python, not to JSON
            raise self._error(name, _json_kind(value))
        return self._checked(name, value, str(value))

    def _checked(self, name: str, value: int, shown: str) -> int:
        if not self.low <= value <= self.high:
            raise self._error(name, shown)
        return value

    def _error(self, name: str, shown: str) -> ValidationError:
        return ValidationError(f"{name} must be an integer from {self.low} to {self.high}, "
                               f"got {shown[:80]}", name)


@dataclass(frozen=True)
class Number:
    low: float
    high: float
    above_minimum: bool = False  # the low end itself is out

    def from_text(self, name: str, raw: str) -> float:
        if _DECIMAL.fullmatch(raw.strip()) is None:
            raise self._error(name, repr(raw))
        return self._checked(name, float(raw), repr(raw))

    def from_json(self, name: str, value) -> float:
        if type(value) not in (int, float):
            raise self._error(name, _json_kind(value))
        # A JSON integer too big for a float is out of range anyway.
        return self._checked(name, float(value) if abs(value) < 1e300 else math.inf,
                             str(value)[:80])

    def _checked(self, name: str, value: float, shown: str) -> float:
        in_range = (self.low < value <= self.high if self.above_minimum
                    else self.low <= value <= self.high)
        if not in_range:  # also NaN
            raise self._error(name, shown)
        return value

    def _error(self, name: str, shown: str) -> ValidationError:
        bounds = (f"greater than {self.low:g} and at most {self.high:g}" if self.above_minimum
                  else f"from {self.low:g} to {self.high:g}")
        return ValidationError(f"{name} must be a number {bounds}, got {shown[:80]}", name)


@dataclass(frozen=True)
class Flag:
    def from_text(self, name: str, raw: str) -> bool:
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValidationError(f"{name} must be true or false (also 1/0, yes/no, on/off), "
                              f"got {raw[:80]!r}", name)

    def from_json(self, name: str, value) -> bool:
        if type(value) is not bool:
            raise ValidationError(f"{name} must be a JSON boolean (true or false), got "
                                  f"{_json_kind(value)}", name)
        return value


# Every setting of a GenerationRequest but the prefix and the stops, with its range.
SETTINGS = {
    "length": Integer(1, MAX_LENGTH),
    "temperature": Number(0.0, MAX_TEMPERATURE),  # 0 picks the likeliest token every time
    "top_k": Integer(0, MAX_TOP_K),
    "top_p": Number(0.0, 1.0, above_minimum=True),
    "seed": Integer(0, MAX_SEED),
    "truncate": Flag(),
    "include_prefix": Flag(),
    "repetition_penalty": Number(*REPETITION_PENALTY_RANGE),
    "frequency_penalty": Number(*PENALTY_RANGE),
    "presence_penalty": Number(*PENALTY_RANGE),
    "no_repeat_ngram_size": Integer(0, MAX_NO_REPEAT_NGRAM),
    "n": Integer(1, MAX_N),
}


# ---------------------------------------------------------------- requests

@dataclass(frozen=True)
class GenerationQuery:
    request: GenerationRequest
    callback: Optional[str] = None  # a checked JSONP function name


def parse_generation_query(args, *, allow_callback: bool = True) -> GenerationQuery:
    """Validates a MultiDict of query parameters (Flask's `request.args`)."""
    allowed = GENERATION_PARAMETERS + (JSONP_PARAMETERS if allow_callback else ())
    for name in args.keys():
        if name not in allowed:
            raise _unknown(name, allowed)
        if len(args.getlist(name)) > 1 and name not in REPEATABLE:
            raise ValidationError(f"{name} is given more than once", name)
    values: Mapping[str, str] = {name: args.get(name) for name in args.keys()}
    settings = {name: SETTINGS[name].from_text(name, raw)
                for name, raw in values.items() if name in SETTINGS}
    request = GenerationRequest(prefix=_prefix(values), stop=stop_strings(args.getlist("stop")),
                                **{**REPETITION_DEFAULTS, **settings})
    return GenerationQuery(request=request, callback=_callback(values))


def parse_generation_body(body) -> GenerationRequest:
    """Validates a JSON body (already parsed) of the same parameters, typed:
    numbers as JSON numbers, flags as JSON booleans, `stop` a string or a list
    of strings. JSONP is for GET only."""
    if not isinstance(body, dict):
        raise ValidationError(f"the body must be a JSON object of parameters, got "
                              f"{_json_kind(body)}")
    for name in body:
        if name not in GENERATION_PARAMETERS:
            raise _unknown(name, GENERATION_PARAMETERS)
    for name in ("prefix", "sample"):
        if name in body and not isinstance(body[name], str):
            raise ValidationError(f"{name} must be a string, got {_json_kind(body[name])}", name)
    settings = {name: SETTINGS[name].from_json(name, value)
                for name, value in body.items() if name in SETTINGS}
    if "stop" in body and body["stop"] is None:  # null means "not given" on /v1 only
        raise ValidationError("stop must be a string or a list of strings, got null", "stop")
    return GenerationRequest(prefix=_prefix(body),
                             stop=stop_strings(json_stops("stop", body.get("stop"))),
                             **{**REPETITION_DEFAULTS, **settings})


def json_stops(name: str, value) -> list[str]:
    """A JSON `stop`: absent (None), one string, or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ValidationError(f"{name} must be a string or a list of strings, got "
                          f"{_json_kind(value)}", name)


def prefix_text(name: str, text: str) -> str:
    """A prefix within its limits, as given."""
    if len(text) > MAX_PREFIX_CHARS:
        raise ValidationError(f"{name} must be at most {MAX_PREFIX_CHARS} characters, "
                              f"got {len(text)}", name)
    if "\x00" in text:
        raise ValidationError(f"{name} must not contain NUL characters", name)
    return text


def stop_strings(texts: list[str], name: str = "stop") -> tuple[str, ...]:
    """Strings that end the text where they appear (the episode delimiter always does)."""
    if len(texts) > MAX_STOPS:
        raise ValidationError(f"{name} may be given at most {MAX_STOPS} times, got {len(texts)}",
                              name)
    for text in texts:
        if not 1 <= len(text) <= MAX_STOP_CHARS or "\x00" in text:
            raise ValidationError(f"each {name} must be 1 to {MAX_STOP_CHARS} characters with "
                                  f"no NUL, got {text[:80]!r}", name)
    return tuple(texts)


def context_error(prefix_tokens: int, length: int, n_ctx: int, *, prefix_name: str = "prefix",
                  length_name: str = "length") -> ValidationError:
    """Why a prefix and the tokens to generate do not fit the model's context, and what to ask."""
    room = n_ctx - prefix_tokens
    advice = f"ask for at most {length_name}={room}" if room >= 1 else f"shorten the {prefix_name}"
    return ValidationError(
        f"the {prefix_name} is {prefix_tokens} tokens and {length_name} is {length}: together "
        f"they exceed the model's context of {n_ctx} tokens; {advice}", length_name,
        code="context_length_exceeded")


def _prefix(values) -> str:
    if "prefix" in values and "sample" in values:
        raise ValidationError("give the prefix as prefix or as sample, not both", "prefix")
    name = "prefix" if "prefix" in values else "sample"
    text = values.get(name)
    if text is None:
        return DEFAULT_PREFIX
    text = prefix_text(name, text)
    return text if text.strip() else DEFAULT_PREFIX


def _callback(values) -> Optional[str]:
    name = values.get("callback")
    if name is None:
        return None
    if not CALLBACK_PATTERN.fullmatch(name):
        raise ValidationError("callback must be a JavaScript name: a letter, _ or $, then up "
                              "to 63 letters, digits, _, $ or dots", "callback")
    return name


def _unknown(name: str, known) -> ValidationError:
    return ValidationError(f"unknown parameter {name!r}; known parameters: {', '.join(known)}",
                           name)


def _json_kind(value) -> str:
    """How a JSON value is named in a reason: its type, and the value when short."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value), "a value")
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, (int, float)):
        shown = str(value)
    elif isinstance(value, str):
        shown = repr(value)
    else:
        return kind
    return f"{kind} ({shown})" if len(shown) <= 40 else kind
