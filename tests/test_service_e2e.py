"""The whole service, for real: scripts/serve.sh starts uWSGI and nginx on a
free 127.0.0.1 port over a tiny checkpoint; every request goes through nginx."""
import json
import re
import os

import pytest

from live_generation import SLOW_TURNS, FrozenLoop, read_events
from pokegen.service_stack import short_temp_dir

pytestmark = pytest.mark.e2e


EPISODE_KEYS = {"text", "prefix", "tokens", "seconds", "model", "finish_reason"}


@pytest.fixture(scope="module")
def stack(start_stack):
    freeze_file = os.path.join(short_temp_dir("pokegen-freeze-"), "freeze")
    service = start_stack(GENERATION_CONCURRENCY=3, QUEUE_SIZE=8,
                          POKEGEN_FAULT_FREEZE_FILE=freeze_file, **SLOW_TURNS)
    service.freeze_file = freeze_file
    return service


def test_json_answer_with_cors(stack):
    response = stack.get("/?prefix=Pikachu%20was%20arrested&length=20&truncate=0")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    body = response.json()
    assert set(body) == EPISODE_KEYS
    assert body["text"].startswith("Pikachu was arrested") and len(body["text"]) > 20
    assert body["prefix"] == "Pikachu was arrested" and body["model"] == "run1"
    assert 1 <= body["tokens"] <= 20 and body["seconds"] > 0


def test_defaults_of_the_original(stack):
    body = stack.get("/", headers={"Accept": "*/*"}).json()
    assert body["prefix"] == "Pikachu and Ash were"
    assert body["text"].startswith("Pikachu and Ash were")
    without_prefix = stack.get("/?sample=Misty&length=8&include_prefix=false&truncate=no").json()
    assert without_prefix["prefix"] == "Misty" and not without_prefix["text"].startswith("Misty")


def test_jsonp_for_the_original_front_end(stack):
    response = stack.get("/?sample=Brock%20cooks&length=8&callback=jQuery3_1.done")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/javascript; charset=utf-8"
    match = re.fullmatch(r"/\*\*/jQuery3_1\.done\((.*)\);\n", response.text, re.S)
    assert match, response.text
    payload = json.loads(match.group(1))
    assert EPISODE_KEYS <= set(payload) and payload["sample_text"] == payload["text"]


# A prefix that fills the context: 1000 characters outside the tiny model's
# merges take a token or more each, so with length 1023 it cannot fit.
OVERFULL = "ŵ" * 1000


@pytest.mark.parametrize("query, parameter", [
    ("length=0", "length"), ("length=1024", "length"), ("length=12.5", "length"),
    ("length=many", "length"), ("temperature=-0.1", "temperature"),
    ("temperature=nan", "temperature"), ("temperature=9", "temperature"),
    ("top_k=-1", "top_k"), ("top_k=x", "top_k"), ("top_p=0", "top_p"), ("top_p=1.5", "top_p"),
    ("seed=-1", "seed"), ("seed=abc", "seed"), ("truncate=perhaps", "truncate"),
    ("include_prefix=2", "include_prefix"), ("prefix=" + "a" * 1001, "prefix"),
    ("sample=" + "a" * 1001, "sample"), ("prefix=a&sample=b", "prefix"),
    ("length=5&length=6", "length"), ("lenght=5", "lenght"),
    ("callback=alert(1)", "callback"), ("callback=" + "a" * 65, "callback"),
    ("callback=1x", "callback"), ("prefix=" + OVERFULL + "&length=1023", "length"),
])
def test_every_bad_parameter_is_a_400_with_a_json_reason(stack, query, parameter):
    response = stack.get("/?" + query)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["parameter"] == parameter and parameter in body["error"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_unknown_paths_and_methods_answer_json(stack):
    for response, status in ((stack.get("/episodes"), 404),
                             (stack.get("/static/missing.js"), 404)):
        assert response.status_code == status
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]
    import requests
    put = requests.put(stack.url + "/?prefix=Ash", timeout=30)
    assert put.status_code == 405 and put.json()["error"]
    posted = requests.post(stack.url + "/?prefix=Ash", data="prefix=Ash", timeout=30,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert posted.status_code == 415 and "application/json" in posted.json()["error"]


def test_seeds_reproduce(stack):
    query = "/?prefix=Team%20Rocket&length=30&seed=1234&temperature=1.0&top_k=0&top_p=0.95"
    first, second = stack.get(query).json(), stack.get(query).json()
    assert first["text"] == second["text"]
    other = stack.get(query.replace("seed=1234", "seed=99")).json()
    assert other["text"] != first["text"]


def test_content_negotiation_gives_browsers_the_page(stack):
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = stack.get("/", headers={"Accept": browser})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Server"] == "nginx"  # no version: server_tokens off
    script = stack.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    assert stack.get("/?length=4", headers={"Accept": browser}).json()["text"]


def test_probes_and_info(stack):
    assert stack.get("/healthz").json() == {"status": "alive"}
    assert stack.get("/readyz").json()["status"] == "ready"
    info = stack.get("/info").json()
    assert info["hparams"]["n_ctx"] == 1024 and info["state"] == "ready"
    assert info["limits"]["max_batch"] == 3 and info["limits"]["max_length"] == 1023
    assert info["limits"]["weight_dtype"] == "int8"  # make venv built the kernel
    assert info["graph_ops"] == 0  # the native decoder runs no TensorFlow graph


def test_stream_delivers_the_first_piece_before_the_generation_ends(stack):
    import requests
    with requests.get(stack.url + "/stream?prefix=Ash&length=1023&truncate=0", stream=True,
                      timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(response)
        first_event, first_data = next(events)
        # The generation is still running when its first piece has come through nginx
        # (the loop held: a fast CPU could otherwise write the rest before we look).
        assert first_event == "piece" and first_data["text"]
        with FrozenLoop(stack.freeze_file):
            assert stack.metric("pokegen_generations_in_flight") >= 1
        rest = list(events)
    assert rest[-1][0] == "done" and set(rest[-1][1]) == EPISODE_KEYS
    assert all(event == "piece" for event, _ in rest[:-1])
    streamed = first_data["text"] + "".join(data["text"] for _, data in rest[:-1])
    assert rest[-1][1]["text"] == "Ash" + streamed


def test_stream_refuses_bad_parameters_before_starting(stack):
    response = stack.get("/stream?length=0")
    assert response.status_code == 400 and response.json()["parameter"] == "length"


def test_metrics_count_requests_and_tokens(stack):
    tokens_before = stack.metric("pokegen_tokens_generated_total")
    ok_before = _requests_total(stack, "/", "200")
    bad_before = _requests_total(stack, "/", "400")
    body = stack.get("/?prefix=Gary&length=7&truncate=0").json()
    stack.get("/?length=0")
    assert stack.metric("pokegen_tokens_generated_total") == tokens_before + body["tokens"]
    assert _requests_total(stack, "/", "200") == ok_before + 1
    assert _requests_total(stack, "/", "400") == bad_before + 1
    text = stack.get("/metrics").text
    for name in ("pokegen_http_request_duration_seconds_bucket", "pokegen_queue_depth",
                 "pokegen_generations_in_flight", "pokegen_graph_ops",
                 "process_resident_memory_bytes"):
        assert name in text


def test_graph_size_and_memory_stay_flat_across_50_generations(stack):
    for i in range(10):  # warm up: allocator pools and caches settle
        stack.get(f"/?prefix=Warm%20up&length=32&seed={i}")
    ops_before = stack.get("/info").json()["graph_ops"]
    rss_before = stack.metric("process_resident_memory_bytes")
    for i in range(50):
        response = stack.get(f"/?prefix=Episode%20{i}&length=32&seed={i}&truncate=0")
        assert response.status_code == 200
    ops_after = stack.get("/info").json()["graph_ops"]
    rss_after = stack.metric("process_resident_memory_bytes")
    assert ops_after == ops_before
    print(f"RSS {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB over 50 generations")
    assert rss_after < rss_before * 1.05, (rss_before, rss_after)


def _requests_total(stack, endpoint, status):
    text = stack.get("/metrics").text
    match = re.search(rf'^pokegen_http_requests_total{{endpoint="{re.escape(endpoint)}",'
                      rf'status="{status}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_the_page_in_chromium_writes_an_episode(stack):
    from pokegen.browser import chromium_page

    with chromium_page() as page:
        page.goto(stack.url + "/")
        assert page.title().startswith("pokegen")
        page.fill("#prefix", "Pikachu was arrested")
        page.fill("#length", "64")
        # Record every state the form goes through, to see the episode being written.
        page.evaluate("""() => {
            window.seenStates = [];
            new MutationObserver(() => window.seenStates.push(
                document.getElementById('generate-form').dataset.state))
              .observe(document.getElementById('generate-form'), {attributes: true});
        }""")
        page.click("#generate")
        page.wait_for_selector("#generate-form[data-state=done]", timeout=60_000)
        episode = page.inner_text("#episode")
        assert episode.startswith("Pikachu was arrested") and len(episode) > 30
        assert page.locator("#episode p").count() >= 1
        assert "tokens in" in page.inner_text("#details")
        assert page.is_hidden("#error") and page.is_hidden("#loader")
        assert "writing" in page.evaluate("window.seenStates")
        assert page.script_errors == []  # the strict CSP let every script run
