"""Bad input, fuzzed. Hypothesis sends arbitrary queries (wrong types, numbers
out of range, NaN and infinities, huge numbers, oversize prefixes, odd
unicode, percent-encoded surrogates, raw bytes, repeated parameters,
injection-looking callbacks), unknown paths and wrong methods; schemathesis
drives the API from app/openapi.yaml. Whatever comes in: no 5xx and no
traceback, every 4xx a JSON reason, every 200 what the description promises,
JSONP only for safe names.

Most examples run in-process against the Flask app and the real engine on a
tiny checkpoint; a bounded number go through the real nginx + uWSGI stack.
Examples are derandomized: every run (and CI) tries the same ones.
"""
import json
import logging
import os
import posixpath
import time
import urllib.parse

import hypothesis.core
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from api_contract import (DOCUMENT, TRUE_WORDS, ask_app, ask_stack, check_documented,
                          check_episode, check_error, check_generation, effective_prefix)
from api_strategies import (ANY_TEXT, RAW_LINE_BYTES, RAW_QUERY_BYTES, encode, hostile_queries,
                            valid_queries)
from app import create_app
from app.config import Config
from engine_double import EngineDouble


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    print_blob=False)


# --------------------------------------------------------------- fixtures

class ErrorLog(logging.Handler):
    """Records at ERROR and above: an unhandled error logs its traceback."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def assert_empty(self):
        assert not self.records, [self.format(record) for record in self.records]


@pytest.fixture(scope="module")
def error_log():
    handler = ErrorLog()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def real_app(tiny_checkpoint, error_log):
    """The Flask app with the real engine on a tiny checkpoint."""
    app = create_app(Config(checkpoint_dir=tiny_checkpoint, run_name="run1",
                            generation_concurrency=2, queue_size=4))
    engine = app.extensions["pokegen"].engine
    assert engine.wait_ready(120), engine.error
    yield app
    engine.close(grace=0)


@pytest.fixture(scope="module")
def client(real_app):
    return real_app.test_client()


@pytest.fixture(scope="module")
def engine(real_app):
    return real_app.extensions["pokegen"].engine


@pytest.fixture(scope="module")
def double_client():
    """The HTTP layer alone, for properties that need no generated text."""
    return create_app(Config(), engine=EngineDouble()).test_client()


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(GENERATION_CONCURRENCY=2, QUEUE_SIZE=4)


# ------------------------------------------- queries, in-process, real engine

@fuzz_settings(150)
@given(pairs=valid_queries())
def test_valid_queries_get_the_documented_episode(client, engine, error_log, pairs):
    answer = ask_app(client, encode("/", pairs))
    prefix_tokens = engine.count_tokens(effective_prefix(pairs))
    if prefix_tokens + int(dict(pairs)["length"]) > engine.info["hparams"]["n_ctx"]:
        assert answer.status == 400 and check_error(answer)["parameter"] == "length", answer
    else:
        assert answer.status == 200, answer
        check_generation(answer, pairs, engine)
    error_log.assert_empty()


@fuzz_settings(400)
@given(pairs=hostile_queries())
@example(pairs=[("length", "5"), ("temperature", "nan")])
@example(pairs=[("length", "5"), ("length", "6")])
@example(pairs=[("length", "3"), ("prefix", "a"), ("sample", "b")])
@example(pairs=[("length", "3"), ("callback", "alert(document.cookie)")])
@example(pairs=[("length", "3"), ("prefix", "x" * 1001)])
@example(pairs=[("length", "3"), ("sample", " " * 1001)])
@example(pairs=[("length", "3"), ("top_p", "5e-324")])
def test_hostile_queries_get_a_json_reason_never_a_crash(client, engine, error_log, pairs):
    check_generation(ask_app(client, encode("/", pairs)), pairs, engine)
    error_log.assert_empty()


@fuzz_settings(300)
@given(raw=RAW_QUERY_BYTES)
@example(raw=b"prefix=\xff\xfe")  # not UTF-8, sent unencoded
@example(raw=b"prefix=\xed\xa0\x80")  # a UTF-16 surrogate, sent unencoded
@example(raw=b"prefix=%ED%A0%80%ED%B0%80")  # a surrogate pair, percent-encoded as CESU-8
@example(raw=b"prefix=%C0%80&seed=1")  # an overlong NUL
@example(raw=b"prefix=%F4%90%80%80")  # past U+10FFFF
@example(raw=b"prefix=%&%%=%zz&=")
def test_raw_query_bytes_get_a_json_reason_never_a_crash(client, error_log, raw):
    answer = ask_app(client, b"/?length=3&" + raw)
    assert answer.status in (200, 400), answer
    if answer.status == 400:
        check_error(answer)
    else:
        check_documented("/", answer)
    error_log.assert_empty()


@fuzz_settings(60)
@given(pairs=valid_queries(jsonp=False))
def test_a_stream_is_pieces_then_the_documented_episode(client, error_log, pairs):
    answer = ask_app(client, encode("/stream", pairs))
    if answer.status == 400:  # the prefix does not fit the context
        assert check_error(answer)["parameter"] == "length", answer
        return
    check_documented("/stream", answer)
    events = [block.split("\n") for block in answer.body.decode().strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    data = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert names == ["piece"] * (len(names) - 1) + ["done"], answer
    done = check_episode(data[-1], answer)
    assert done["tokens"] <= int(dict(pairs)["length"])
    with_prefix = dict(pairs).get("include_prefix", "1").strip().lower() in TRUE_WORDS
    generated = done["text"].removeprefix(done["prefix"]) if with_prefix else done["text"]
    streamed = "".join(piece["text"] for piece in data[:-1])
    assert streamed.startswith(generated), answer  # the episode is the stream, maybe cut short
    error_log.assert_empty()


@fuzz_settings(20)
@given(temperature=st.floats(min_value=5e-324, max_value=1e-300),
       prefix=st.sampled_from(["Ash", "Misty sneezed", "\u202eRocket", "😀"]),
       seed=st.integers(0, 2**31 - 1))
def test_a_temperature_too_small_to_matter_picks_the_likeliest_tokens(client, error_log,
                                                                      temperature, prefix, seed):
    def text(temperature_text):
        query = [("prefix", prefix), ("length", "6"), ("truncate", "0"), ("seed", str(seed)),
                 ("top_k", "0"), ("temperature", temperature_text)]
        answer = ask_app(client, encode("/", query))
        assert answer.status == 200, answer
        return answer.json()["text"]

    assert text(repr(temperature)) == text("0")
    error_log.assert_empty()


@pytest.mark.parametrize("name", ["length", "temperature", "top_k", "top_p", "seed"])
@pytest.mark.parametrize("tail", ["x", "e", "."])
def test_a_value_as_long_as_nginx_allows_is_refused_at_once(double_client, name, tail):
    """Refusing costs linear time (a backtracking parser took seconds here).
    CPU time of this process, so a busy machine does not matter."""
    started = time.process_time()
    response = double_client.get(f"/?{name}={'1' * 16000}{tail}")
    assert response.status_code == 400 and response.get_json()["parameter"] == name
    assert time.process_time() - started < 0.5


# ------------------------------------------------ paths, methods, negotiation

ROUTES = sorted(DOCUMENT["paths"])
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "app", "static")


def is_served(path: str) -> bool:
    """A route of the API, or (once normalised) one of the page's files."""
    path = posixpath.normpath(path)
    name = path.removeprefix("/static/")
    return path in ROUTES or (name != path and os.path.isfile(os.path.join(STATIC_DIR, name)))


@fuzz_settings(150)
@given(segments=st.lists(ANY_TEXT.filter(lambda s: s not in ("", ".", "..")), min_size=1,
                         max_size=3),
       under_static=st.booleans(),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
@example(segments=["..", "..", "etc", "passwd"], under_static=True, method="GET")
@example(segments=["a\x00b"], under_static=True, method="GET")
def test_unknown_paths_are_a_json_404_or_405(client, error_log, segments, under_static, method):
    segments = ["static"] * under_static + segments
    if is_served("/" + "/".join(segments)):
        return
    target = "/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)
    answer = ask_app(client, target.encode(), method=method)
    # /static/<name> is a route (GET only) for most names.
    assert answer.status in ((404, 405) if under_static and method != "GET" else (404,)), answer
    check_error(answer)
    error_log.assert_empty()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_every_route_are_a_json_405(client, method):
    for route, item in DOCUMENT["paths"].items():
        if method.lower() in item:
            continue
        answer = ask_app(client, route.replace("{file}", "app.js").encode(), method=method)
        assert answer.status == 405, answer
        if route.startswith("/v1/"):
            assert answer.json()["error"]["message"], answer
        else:
            check_error(answer)
        assert {m.upper() for m in item} <= set(answer.headers["allow"].split(", ")), answer


@fuzz_settings(200)
@given(accept=st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
                        st.lists(st.sampled_from(["text/html", "application/json", "*/*",
                                                  "text/*", ";q=0", ";q=0.5", ";q=nan",
                                                  ";q=1e9", ", ", ";level=1"]), max_size=8)
                          .map("".join)))
def test_any_accept_header_gets_the_page_or_json(double_client, accept):
    response = double_client.get("/", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.mimetype in ("text/html", "application/json")


# ------------------------------------------------- the real nginx + uWSGI stack

@pytest.mark.e2e
@fuzz_settings(50)
@given(request=st.one_of(hostile_queries().map(lambda pairs: ("pairs", pairs)),
                         RAW_LINE_BYTES.map(lambda raw: ("raw", raw))))
@example(request=("raw", b"prefix=\xff\xfe"))
@example(request=("pairs", [("length", "3"), ("callback", "alert(1)")]))
@example(request=("pairs", [("length", "3"), ("prefix", "😀" * 1500)]))  # an 18 kB line
@example(request=("pairs", [("length", "3"), ("_", "a" * 32700)]))  # just under 32 kB
def test_through_nginx_no_input_gives_a_5xx(stack, request):
    kind, value = request
    target = encode("/", value) if kind == "pairs" else b"/?length=3&" + value
    answer = ask_stack(stack.port, target)
    if answer.status == 414 or kind == "raw":
        # nginx itself refuses request lines over 16 kB and some raw bytes.
        assert answer.status in (200, 400, 414), answer
        if answer.status == 200:
            check_documented("/", answer)
        else:
            check_error(answer)
    else:
        check_generation(answer, value)


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "FOO"])
def test_through_nginx_wrong_methods_and_paths_answer_json(stack, method):
    for target in (b"/?length=2", b"/stream", b"/healthz", b"/static/app.js", b"/no/such"):
        answer = ask_stack(stack.port, target, method=method)
        # / and /stream take POST, but only with a JSON body.
        takes_post = method == "POST" and target in (b"/?length=2", b"/stream")
        assert answer.status in ((415,) if takes_post else (400, 404, 405)), answer
        check_error(answer)


@pytest.mark.e2e
def test_the_stack_logged_no_traceback(stack):
    """Runs after the stack's examples: nothing went wrong behind the answers."""
    with open(stack.log_path, encoding="utf-8", errors="replace") as log:
        text = log.read()
    assert "Traceback" not in text and "unhandled error" not in text, text[-4000:]


# --------------------------------------- schemathesis, from the description

CONFORMANCE = [getattr(schemathesis.checks, name) for name in (
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "negative_data_rejection")]


@pytest.fixture(scope="module")
def described_cases(real_app):
    """Requests schemathesis makes from the description the app serves, valid
    ones and ones that break it, for every operation; sent to the app itself."""
    schema = schemathesis.openapi.from_wsgi("/openapi.yaml", real_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    printer = hypothesis.core.RepresentationPrinter
    cases = st.one_of([operation.as_strategy(mode) for operation in operations
                       for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                       if mode == GenerationMode.POSITIVE or operation.query
                       or operation.path_parameters or operation.body])
    # schemathesis swaps Hypothesis' failure printer for a silent one, process-wide:
    # put it back, so that every property test still shows its failing example.
    hypothesis.core.RepresentationPrinter = printer
    return cases


# GET, POST and /v1 operations share these examples.
@fuzz_settings(450)
@given(data=st.data())
def test_the_api_answers_as_its_description_says(described_cases, engine, error_log, data):
    served_model = engine.model_name
    case = data.draw(described_cases)
    if case.meta.generation.mode.is_positive and case.operation.path in ("/", "/stream"):
        # Valid lengths go up to 1023 tokens; a dozen is plenty here.
        if case.operation.method == "get":
            query = case.query or {}
            case.query = {**query, "length": min(query.get("length", 12), 12)}
        else:
            case.body = {**case.body, "length": min(case.body.get("length", 12), 12)}
    if case.meta.generation.mode.is_positive and case.operation.path == "/v1/completions":
        # The served model (any other is a 404, tested elsewhere), and few tokens.
        case.body = {**case.body, "model": served_model,
                     "max_tokens": min(case.body.get("max_tokens") or 12, 12)}
    case.call_and_validate(checks=CONFORMANCE)
    error_log.assert_empty()
