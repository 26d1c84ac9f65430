"""Turns a query string into a `GenerationRequest`, or one clear reason why not.

Parsing is strict on purpose: "1.5" is not a length, "nan" is not a
temperature, a misspelt parameter is an error rather than silently ignored.
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
    """A bad query: answered with 400 and this reason."""

    def __init__(self, reason: str, parameter: Optional[str] = None):
        super().__init__(reason)
        self.reason = reason
        self.parameter = parameter


@dataclass(frozen=True)
class GenerationQuery:
    request: GenerationRequest
    callback: Optional[str] = None  # a checked JSONP function name


def parse_generation_query(args, *, allow_callback: bool = True) -> GenerationQuery:
    """Validates a MultiDict of query parameters (Flask's `request.args`)."""
    allowed = GENERATION_PARAMETERS + (JSONP_PARAMETERS if allow_callback else ())
    for name in args.keys():
        if name not in allowed:
            raise ValidationError(f"unknown parameter {name!r}; known parameters: "
                                  f"{', '.join(allowed)}", name)
        if len(args.getlist(name)) > 1 and name not in REPEATABLE:
            raise ValidationError(f"{name} is given more than once", name)
    values: Mapping[str, str] = {name: args.get(name) for name in args.keys()}
    defaults = GenerationRequest(**REPETITION_DEFAULTS)
    request = GenerationRequest(
        prefix=_prefix(values),
        length=_integer(values, "length", defaults.length, 1, MAX_LENGTH),
        # 0 picks the likeliest token every time.
        temperature=_decimal(values, "temperature", defaults.temperature, 0.0, MAX_TEMPERATURE,
                             above_minimum=False),
        top_k=_integer(values, "top_k", defaults.top_k, 0, MAX_TOP_K),
        top_p=_decimal(values, "top_p", defaults.top_p, 0.0, 1.0, above_minimum=True),
        seed=_integer(values, "seed", defaults.seed, 0, MAX_SEED),
        truncate=_boolean(values, "truncate", defaults.truncate),
        include_prefix=_boolean(values, "include_prefix", defaults.include_prefix),
        stop=_stops(args.getlist("stop")),
        repetition_penalty=_decimal(values, "repetition_penalty", defaults.repetition_penalty,
                                    *REPETITION_PENALTY_RANGE, above_minimum=False),
        frequency_penalty=_decimal(values, "frequency_penalty", defaults.frequency_penalty,
                                   *PENALTY_RANGE, above_minimum=False),
        presence_penalty=_decimal(values, "presence_penalty", defaults.presence_penalty,
                                  *PENALTY_RANGE, above_minimum=False),
        no_repeat_ngram_size=_integer(values, "no_repeat_ngram_size",
                                      defaults.no_repeat_ngram_size, 0, MAX_NO_REPEAT_NGRAM),
        n=_integer(values, "n", defaults.n, 1, MAX_N),
    )
    return GenerationQuery(request=request, callback=_callback(values))


def context_error(prefix_tokens: int, length: int, n_ctx: int) -> ValidationError:
    """Why a prefix and the tokens to generate do not fit the model's context, and what to ask."""
    room = n_ctx - prefix_tokens
    advice = f"ask for at most length={room}" if room >= 1 else "shorten the prefix"
    return ValidationError(
        f"the prefix is {prefix_tokens} tokens and length is {length}: together "
        f"they exceed the model's context of {n_ctx} tokens; {advice}", "length")


def _prefix(values) -> str:
    if "prefix" in values and "sample" in values:
        raise ValidationError("give the prefix as prefix or as sample, not both", "prefix")
    name = "prefix" if "prefix" in values else "sample"
    text = values.get(name)
    if text is None:
        return DEFAULT_PREFIX
    if len(text) > MAX_PREFIX_CHARS:
        raise ValidationError(f"{name} must be at most {MAX_PREFIX_CHARS} characters, "
                              f"got {len(text)}", name)
    if "\x00" in text:
        raise ValidationError(f"{name} must not contain NUL characters", name)
    return text if text.strip() else DEFAULT_PREFIX


def _integer(values, name, default, low, high):
    raw = values.get(name)
    if raw is None:
        return default
    # The length cap keeps int() away from its limit on digit strings.
    if (len(raw) > 30 or not _INTEGER.fullmatch(raw.strip())
            or not low <= int(raw) <= high):
        raise ValidationError(f"{name} must be an integer from {low} to {high}, got {raw!r}",
                              name)
    return int(raw)


def _decimal(values, name, default, low, high, *, above_minimum):
    raw = values.get(name)
    if raw is None:
        return default
    bounds = (f"greater than {low:g} and at most {high:g}" if above_minimum
              else f"from {low:g} to {high:g}")
    ok = _DECIMAL.fullmatch(raw.strip()) is not None
    value = float(raw) if ok else math.nan
    in_range = low < value <= high if above_minimum else low <= value <= high
    if not ok or not in_range:
        raise ValidationError(f"{name} must be a number {bounds}, got {raw!r}", name)
    return value


def _boolean(values, name, default):
    raw = values.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValidationError(f"{name} must be true or false (also 1/0, yes/no, on/off), "
                          f"got {raw!r}", name)


def _stops(texts: list[str]) -> tuple[str, ...]:
    """Strings that end the text where they appear (the episode delimiter always does)."""
    if len(texts) > MAX_STOPS:
        raise ValidationError(f"stop may be given at most {MAX_STOPS} times, got {len(texts)}",
                              "stop")
    for text in texts:
        if not 1 <= len(text) <= MAX_STOP_CHARS or "\x00" in text:
            raise ValidationError(f"each stop must be 1 to {MAX_STOP_CHARS} characters with no NUL, "
                                  f"got {text[:80]!r}", "stop")
    return tuple(texts)


def _callback(values) -> Optional[str]:
    name = values.get("callback")
    if name is None:
        return None
    if not CALLBACK_PATTERN.fullmatch(name):
        raise ValidationError("callback must be a JavaScript name: a letter, _ or $, then up "
                              "to 63 letters, digits, _, $ or dots", "callback")
    return name
