"""Turns the JSON body of an OpenAI-style `POST /v1/completions` into a
`GenerationRequest`, with the ranges of app/validation.py under OpenAI's names.

Defaults follow OpenAI's completions: 16 tokens, temperature 1, no top-k,
penalties off, the text neither echoed after the prompt nor cut to a sentence.
A parameter OpenAI has and this server does not honour is a 400 naming it;
null means "not given", as with OpenAI.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.engine.types import GenerationRequest
from app.validation import (SETTINGS, Flag, ValidationError, json_stops, prefix_text,
                            stop_strings)

DEFAULT_MAX_TOKENS = 16  # as OpenAI's completions
# OpenAI's name -> the GenerationRequest setting whose range it takes.
SAMPLING = {"max_tokens": "length", "temperature": "temperature", "top_p": "top_p", "n": "n",
            "seed": "seed", "frequency_penalty": "frequency_penalty",
            "presence_penalty": "presence_penalty"}
SUPPORTED = ("model", "prompt", "stop", "stream", "stream_options") + tuple(SAMPLING)
# OpenAI's other completion parameters: refused by name rather than ignored.
UNSUPPORTED = ("best_of", "echo", "logit_bias", "logprobs", "suffix", "user")


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    generation: GenerationRequest
    stream: bool = False
    include_usage: bool = False  # a last chunk with the usage (stream_options.include_usage)


def parse_completion_request(body) -> CompletionRequest:
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    given = {name: value for name, value in body.items() if value is not None}
    for name in given:
        if name in UNSUPPORTED:
            raise ValidationError(f"{name} is not supported by this server", name,
                                  code="unsupported_parameter")
        if name not in SUPPORTED:
            raise ValidationError(f"unknown parameter {name!r}; supported parameters: "
                                  f"{', '.join(SUPPORTED)}", name, code="unknown_parameter")
    model = _required_string(given, "model")
    prompt = given.get("prompt")
    if isinstance(prompt, list):
        raise ValidationError("prompt must be one string: lists of prompts and token ids are "
                              "not supported", "prompt", code="unsupported_parameter")
    prompt = prefix_text("prompt", _required_string(given, "prompt"))
    settings = {setting: SETTINGS[setting].from_json(name, given[name])
                for name, setting in SAMPLING.items() if name in given}
    stream = Flag().from_json("stream", given["stream"]) if "stream" in given else False
    generation = GenerationRequest(**{"length": DEFAULT_MAX_TOKENS, "temperature": 1.0,
                                      "top_k": 0, **settings},
                                   prefix=prompt, truncate=False, include_prefix=False,
                                   stop=stop_strings(json_stops("stop", given.get("stop"))))
    return CompletionRequest(model=model, generation=generation, stream=stream,
                             include_usage=_include_usage(given.get("stream_options"), stream))


def _required_string(given: dict, name: str) -> str:
    if name not in given:
        raise ValidationError(f"{name} is required", name, code="missing_required_parameter")
    if not isinstance(given[name], str):
        raise ValidationError(f"{name} must be a string", name)
    return given[name]


def _include_usage(options, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise ValidationError("stream_options is only allowed with stream: true",
                              "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise ValidationError('stream_options must be an object with only "include_usage"',
                              "stream_options")
    value = options.get("include_usage")
    return False if value is None else Flag().from_json("stream_options.include_usage", value)
