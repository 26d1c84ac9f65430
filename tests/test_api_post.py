"""POST / and POST /stream through Flask's test client, with an engine double:
the parameters of GET as a typed JSON body, the same ranges and reasons, and
the body's own refusals (413, 415, bad JSON, unknown or repeated keys)."""
import io
import json
import sys

import pytest

from app.request_body import MAX_BODY_BYTES


def post(client, path, body, **kwargs):
    return client.post(path, data=json.dumps(body, ensure_ascii=False),
                       content_type="application/json", **kwargs)


def test_a_body_gives_the_episode_of_the_same_query(client, engine_double):
    body = {"prefix": "Pikachu a mangé ☃", "length": 4, "temperature": 0, "top_k": 3,
            "top_p": 0.5, "seed": 9, "truncate": False, "include_prefix": False,
            "stop": "THE END", "repetition_penalty": 1.2, "frequency_penalty": -0.5,
            "presence_penalty": 2, "no_repeat_ngram_size": 3, "n": 2}
    response = post(client, "/", body)
    assert response.status_code == 200, response.get_json()
    assert set(response.get_json()) == {"text", "prefix", "tokens", "seconds", "model",
                                        "finish_reason"}
    assert response.get_json()["prefix"] == "Pikachu a mangé ☃"
    query = client.get("/", query_string={**body, "truncate": "false", "include_prefix": "0"})
    assert query.status_code == 200
    assert engine_double.submitted[0] == engine_double.submitted[1]
    assert engine_double.submitted[0].stop == ("THE END",) and engine_double.submitted[0].n == 2


def test_stop_may_be_a_list_and_sample_names_the_prefix(client, engine_double):
    assert post(client, "/", {"sample": "Brock", "stop": ["a", "\n\n"]}).status_code == 200
    submitted = engine_double.submitted[0]
    assert (submitted.prefix, submitted.stop) == ("Brock", ("a", "\n\n"))


def test_an_empty_body_object_takes_every_default(client, engine_double):
    assert post(client, "/", {}).status_code == 200
    assert engine_double.submitted[0] == client.application.extensions["pokegen"].engine.submitted[0]
    get = client.get("/?prefix=")
    assert get.status_code == 200 and engine_double.submitted[0] == engine_double.submitted[1]


@pytest.mark.parametrize("body, parameter, words", [
    ({"length": "12"}, "length", "an integer from 1 to 1023, got a string ('12')"),
    ({"length": 12.0}, "length", "got a number (12.0)"),
    ({"length": True}, "length", "got a boolean (true)"),
    ({"length": 0}, "length", "from 1 to 1023, got 0"),
    ({"length": 10**40}, "length", "from 1 to 1023"),
    ({"temperature": "hot"}, "temperature", "a number from 0 to 5"),
    ({"temperature": 5.5}, "temperature", "got 5.5"),
    ({"top_p": 0}, "top_p", "greater than 0"),
    ({"seed": -1}, "seed", "from 0 to 2147483647"),
    ({"truncate": "false"}, "truncate", "a JSON boolean"),
    ({"include_prefix": 1}, "include_prefix", "a JSON boolean"),
    ({"stop": 3}, "stop", "a string or a list of strings"),
    ({"stop": ["a", 3]}, "stop", "a string or a list of strings"),
    ({"stop": ["a"] * 5}, "stop", "at most 4"),
    ({"stop": ""}, "stop", "1 to 64 characters"),
    ({"prefix": 7}, "prefix", "must be a string"),
    ({"prefix": "x" * 1001}, "prefix", "at most 1000 characters"),
    ({"prefix": "a", "sample": "b"}, "prefix", "not both"),
    ({"n": 9}, "n", "from 1 to 8"),
    ({"seed": None}, "seed", "got null"),
    ({"stop": None}, "stop", "got null"),
    ({"lenght": 5}, "lenght", "unknown parameter 'lenght'"),
    ({"callback": "cb"}, "callback", "unknown parameter 'callback'"),
])
def test_bad_values_are_a_400_naming_the_parameter(client, engine_double, body, parameter, words):
    for path in ("/", "/stream"):
        response = post(client, path, body)
        assert response.status_code == 400, (path, response.get_json())
        answer = response.get_json()
        assert answer["parameter"] == parameter and answer["status"] == 400
        assert words in answer["error"], answer["error"]
    assert engine_double.submitted == []


def test_a_number_too_big_for_a_float_is_out_of_range(client):
    response = client.post("/", data=b'{"temperature": 1e400}', content_type="application/json")
    assert response.status_code == 400 and response.get_json()["parameter"] == "temperature"


def test_the_ranges_and_reasons_are_those_of_the_query(client):
    for name, value in (("length", 1024), ("temperature", 5.01), ("top_k", 1001),
                        ("repetition_penalty", 0.4), ("no_repeat_ngram_size", 11)):
        by_body = post(client, "/", {name: value}).get_json()["error"]
        by_query = client.get(f"/?{name}={value}").get_json()["error"]
        assert by_body == by_query.replace(f"'{value}'", str(value)), (by_body, by_query)


@pytest.mark.parametrize("data, words", [
    (b"{", "not valid JSON"),
    (b'{"length": NaN}', "not valid JSON"),
    (b'{"length": Infinity}', "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[1, 2]", "a JSON object"),
    (b'"Ash"', "a JSON object"),
    (b"null", "a JSON object"),
    (b'{"length": ' + b"9" * 5000 + b"}", "not valid JSON"),
])
def test_a_body_that_is_no_json_object_is_a_400(client, engine_double, data, words):
    response = client.post("/", data=data, content_type="application/json")
    assert response.status_code == 400 and words in response.get_json()["error"]
    assert engine_double.submitted == []


def test_json_nested_deeper_than_python_recurses_is_a_400(client, engine_double):
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # the default; a test runner may have raised it
    try:
        response = client.post("/", data=b"[" * 5000 + b"]" * 5000,
                               content_type="application/json")
    finally:
        sys.setrecursionlimit(limit)
    assert response.status_code == 400 and "not valid JSON" in response.get_json()["error"]
    assert engine_double.submitted == []


def test_a_repeated_key_is_a_400_as_a_repeated_query_parameter(client):
    response = client.post("/", data=b'{"length": 5, "length": 6}',
                           content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["parameter"] == "length"
    assert "more than once" in response.get_json()["error"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1"])
def test_a_body_that_is_not_declared_json_is_a_415(client, engine_double, content_type):
    for path in ("/", "/stream"):
        response = client.post(path, data=b'{"length": 3}', content_type=content_type)
        assert response.status_code == 415, response.get_json()
        assert response.get_json()["status"] == 415
        assert "application/json" in response.get_json()["error"] or "UTF-8" in \
            response.get_json()["error"]
    assert engine_double.submitted == []


def test_json_with_a_charset_parameter_is_fine(client):
    response = client.post("/", data=b'{"length": 3}',
                           content_type="application/json; charset=UTF-8")
    assert response.status_code == 200


def test_a_body_over_16_kB_is_a_413(client, engine_double):
    just_fits = json.dumps({"prefix": "a" * 900, "_pad": " " * (MAX_BODY_BYTES - 950)})
    assert len(just_fits) <= MAX_BODY_BYTES
    assert client.post("/", data=just_fits, content_type="application/json").status_code == 400
    too_big = json.dumps({"prefix": "a" * (MAX_BODY_BYTES + 1)})
    for path in ("/", "/stream", "/v1/completions"):
        response = client.post(path, data=too_big, content_type="application/json")
        assert response.status_code == 413, path
    assert response.get_json()["error"]["message"] == "the body must be at most 16384 bytes"
    assert client.post("/", data=too_big,
                       content_type="application/json").get_json() == \
        {"error": "the body must be at most 16384 bytes", "status": 413}
    assert engine_double.submitted == []


def test_a_body_without_a_length_is_capped_too(client, engine_double):
    body = json.dumps({"prefix": "a" * 20_000}).encode()
    # What a WSGI server hands on for a chunked body: no CONTENT_LENGTH, input terminated.
    response = client.post("/", input_stream=io.BytesIO(body), content_type="application/json",
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413 and engine_double.submitted == []


def test_a_prefix_sent_unescaped_in_utf8_needs_no_percent_encoding(client, engine_double):
    response = client.post("/", data='{"prefix": "ピカチュウ\u2028と"}'.encode(),
                           content_type="application/json")
    assert response.status_code == 200
    assert engine_double.submitted[0].prefix == "ピカチュウ\u2028と"


def test_post_stream_sends_pieces_then_the_json_of_slash(client):
    response = post(client, "/stream", {"prefix": "Go", "length": 4})
    assert response.status_code == 200 and response.headers["X-Accel-Buffering"] == "no"
    blocks = response.get_data(as_text=True).strip().split("\n\n")
    assert [block.split("\n")[0] for block in blocks] == ["event: piece"] * 4 + ["event: done"]


def test_closing_a_post_stream_early_cancels_the_generation(client, engine_double):
    response = post(client, "/stream", {"prefix": "x"}, buffered=False)
    assert b"event: piece" in next(response.response)
    response.close()
    assert len(engine_double.cancelled) == 1


def test_refusals_of_a_post_are_those_of_a_get(client, engine_double):
    engine_double.busy_reason = "all generation slots are busy"
    response = post(client, "/", {"prefix": "x"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "7"
    engine_double.busy_reason = None
    engine_double.info["hparams"]["n_ctx"] = 10
    response = post(client, "/stream", {"prefix": "a b c", "length": 8})
    assert response.status_code == 400 and response.get_json()["parameter"] == "length"
