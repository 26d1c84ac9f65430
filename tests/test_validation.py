"""Query validation: every parameter's parsing, range and error message."""
import pytest
from werkzeug.datastructures import MultiDict

from app.engine.types import DEFAULT_PREFIX, GenerationRequest
from app.validation import (REPETITION_DEFAULTS, ValidationError, context_error,
                            parse_generation_query)


def parse(query, **kwargs):
    return parse_generation_query(MultiDict(query), **kwargs)


def test_defaults_follow_the_original():
    request = parse([]).request
    assert request.prefix == DEFAULT_PREFIX
    assert (request.length, request.temperature, request.top_k, request.top_p) == (256, 0.7, 40, 1.0)
    assert request.seed is None and request.truncate and request.include_prefix


def test_the_query_defaults_control_repetition_and_the_requests_own_are_neutral():
    request = parse([]).request
    assert {name: getattr(request, name) for name in REPETITION_DEFAULTS} == REPETITION_DEFAULTS
    neutral = GenerationRequest()
    assert (neutral.repetition_penalty, neutral.frequency_penalty, neutral.presence_penalty,
            neutral.no_repeat_ngram_size) == (1.0, 0.0, 0.0, 0)
    off = parse([(name, str(getattr(neutral, name))) for name in REPETITION_DEFAULTS]).request
    assert all(getattr(off, name) == getattr(neutral, name) for name in REPETITION_DEFAULTS)


def test_every_parameter_is_read():
    query = parse([("prefix", "Misty sneezed"), ("length", "12"), ("temperature", "1.25"),
                   ("top_k", "0"), ("top_p", ".9"), ("seed", "42"), ("truncate", "off"),
                   ("include_prefix", "FALSE"), ("callback", "jQuery123_456.cb"), ("_", "17")])
    r = query.request
    assert (r.prefix, r.length, r.temperature, r.top_k, r.top_p, r.seed) == \
        ("Misty sneezed", 12, 1.25, 0, 0.9, 42, )
    assert (r.truncate, r.include_prefix, query.callback) == (False, False, "jQuery123_456.cb")


def test_stop_strings_may_be_repeated_up_to_four_times():
    assert parse([]).request.stop == ()
    request = parse([("stop", "THE END"), ("stop", "\n\n"), ("stop", "x" * 64)]).request
    assert request.stop == ("THE END", "\n\n", "x" * 64)


def test_sample_is_the_original_name_of_prefix():
    assert parse([("sample", "Brock cooked")]).request.prefix == "Brock cooked"


@pytest.mark.parametrize("query, parameter", [
    ([("length", "0")], "length"),
    ([("length", "1024")], "length"),
    ([("length", "1.5")], "length"),
    ([("length", "ten")], "length"),
    ([("length", "")], "length"),
    ([("length", "٣")], "length"),  # a digit, but not an ASCII one
    ([("length", "9" * 5000)], "length"),
    ([("temperature", "-1")], "temperature"),
    ([("temperature", "nan")], "temperature"),
    ([("temperature", "inf")], "temperature"),
    ([("temperature", "5.01")], "temperature"),
    ([("top_k", "-1")], "top_k"),
    ([("top_k", "1001")], "top_k"),
    ([("top_p", "0")], "top_p"),
    ([("top_p", "1.1")], "top_p"),
    ([("seed", "-3")], "seed"),
    ([("seed", "2147483648")], "seed"),
    ([("truncate", "maybe")], "truncate"),
    ([("include_prefix", "2")], "include_prefix"),
    ([("prefix", "x" * 1001)], "prefix"),
    ([("sample", "x" * 1001)], "sample"),
    ([("prefix", "a\x00b")], "prefix"),
    ([("prefix", "a"), ("sample", "b")], "prefix"),
    ([("length", "5"), ("length", "6")], "length"),
    ([("lenght", "5")], "lenght"),
    ([("callback", "alert(1)")], "callback"),
    ([("callback", "1abc")], "callback"),
    ([("callback", "a" * 65)], "callback"),
    ([("callback", "")], "callback"),
    ([("callback", "a-b")], "callback"),
    ([("stop", "")], "stop"),
    ([("stop", "x" * 65)], "stop"),
    ([("stop", "a\x00")], "stop"),
    ([("stop", s) for s in "abcde"], "stop"),
])
def test_bad_values_are_refused_with_the_parameter_named(query, parameter):
    with pytest.raises(ValidationError) as caught:
        parse(query)
    assert caught.value.parameter == parameter
    assert parameter in caught.value.reason


def test_temperature_zero_means_greedy_and_is_allowed():
    assert parse([("temperature", "0")]).request.temperature == 0.0


def test_a_prefix_of_exactly_1000_characters_is_fine():
    assert len(parse([("prefix", "é" * 1000)]).request.prefix) == 1000


def test_callback_is_refused_where_jsonp_is_not_offered():
    with pytest.raises(ValidationError):
        parse([("callback", "cb")], allow_callback=False)


def test_longest_allowed_callback():
    name = "$" + "a" * 63
    assert parse([("callback", name)]).callback == name


def test_a_context_error_says_what_would_fit():
    error = context_error(4, 1021, 1024)
    assert error.parameter == "length" and "length=1020" in error.reason
    assert "shorten the prefix" in context_error(1024, 1, 1024).reason
