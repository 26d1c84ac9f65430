"""The HTTP layer through Flask's test client, with an engine double: status
codes, headers and bodies of every route. The real stack is tested in
test_service_e2e.py."""
import json
import re

import pytest

from app.engine.types import Busy


def test_generation_answers_json_with_cors(client, engine_double):
    response = client.get("/?prefix=Ash%20fell&length=4&seed=3")
    assert response.status_code == 200
    assert response.content_type == "application/json; charset=utf-8"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    body = response.get_json()
    assert set(body) == {"text", "prefix", "tokens", "seconds", "model", "finish_reason"}
    assert body["text"].startswith("Ash fell") and body["prefix"] == "Ash fell"
    assert engine_double.submitted[0].length == 4 and engine_double.submitted[0].seed == 3


def test_jsonp_wraps_valid_json_for_the_original_front_end(client):
    response = client.get("/?sample=Brock&callback=jQuery_1.cb")
    assert response.status_code == 200
    assert response.content_type == "application/javascript; charset=utf-8"
    match = re.fullmatch(r"/\*\*/jQuery_1\.cb\((.*)\);\n", response.get_data(as_text=True), re.S)
    payload = json.loads(match.group(1))
    assert payload["sample_text"] == payload["text"] and payload["prefix"] == "Brock"


@pytest.mark.parametrize("query", ["length=0", "callback=alert(document.cookie)",
                                   "temperature=hot", "prefix=" + "x" * 1001, "bogus=1"])
def test_bad_parameters_are_400_json_and_reach_no_engine(client, engine_double, query):
    response = client.get("/?" + query)
    assert response.status_code == 400
    assert response.content_type.startswith("application/json")
    assert response.get_json()["error"]
    assert engine_double.submitted == []


def test_prefix_and_length_beyond_the_context_window_are_400(client, engine_double):
    engine_double.info["hparams"]["n_ctx"] = 10
    response = client.get("/?prefix=a%20b%20c&length=8")
    assert response.status_code == 400
    assert "context" in response.get_json()["error"]


def test_busy_engine_is_503_with_retry_after(client, engine_double):
    engine_double.busy_reason = "all generation slots are busy"
    response = client.get("/?prefix=x")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.get_json() == {"error": "all generation slots are busy", "status": 503,
                                   "retry_after": 7}


def test_while_loading_generation_and_readyz_are_503(client, engine_double):
    engine_double.state = "loading"
    for path in ("/?prefix=x", "/readyz", "/stream?prefix=x"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert int(response.headers["Retry-After"]) >= 1
    assert client.get("/healthz").status_code == 200


def test_failed_model_is_503_with_the_engines_reason(client, engine_double):
    engine_double.state, engine_double.error = "failed", "no checkpoint in checkpoint/run1"
    for path in ("/readyz", "/?prefix=x"):
        response = client.get(path)
        assert response.status_code == 503
        assert "no checkpoint in checkpoint/run1" in response.get_json()["error"]


def test_unknown_paths_and_methods_are_json(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.get_json()["error"] == "no such path: /nope"
    wrong = client.put("/?prefix=x")
    assert wrong.status_code == 405 and "PUT" in wrong.get_json()["error"]
    assert {"GET", "POST"} <= set(wrong.headers["Allow"].split(", "))


def test_a_browser_without_a_query_gets_the_page(client):
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = client.get("/", headers={"Accept": browser})
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert b'id="generate"' in page.data
    for accept in ("*/*", "application/json", "application/json, text/html;q=0.5"):
        assert client.get("/", headers={"Accept": accept}).is_json, accept
    assert client.get("/?prefix=x", headers={"Accept": browser}).is_json


def test_stream_sends_pieces_then_the_json_of_slash(client):
    response = client.get("/stream?prefix=Go")
    assert response.status_code == 200
    assert response.content_type.startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    events = [(block.split("\n")[0], json.loads(block.split("\n")[1][len("data: "):]))
              for block in response.get_data(as_text=True).strip().split("\n\n")]
    assert [name for name, _ in events] == ["event: piece"] * 4 + ["event: done"]
    assert "".join(data["text"] for _, data in events[:4]) == "Then Team Rocket came."
    assert set(events[-1][1]) == {"text", "prefix", "tokens", "seconds", "model", "finish_reason"}


def test_stream_refuses_before_starting(client, engine_double):
    assert client.get("/stream?length=0").status_code == 400
    assert client.get("/stream?callback=cb").status_code == 400
    engine_double.busy_reason = "queue full"
    assert client.get("/stream?prefix=x").status_code == 503


def test_closing_a_stream_early_cancels_the_generation(client, engine_double):
    response = client.get("/stream?prefix=x", buffered=False)
    first = next(response.response)
    assert b"event: piece" in first
    response.close()
    assert len(engine_double.cancelled) == 1


def test_info_shows_model_card_limits_and_graph_size(client):
    info = client.get("/info").get_json()
    assert info["model"] == "double" and info["graph_ops"] == 1234
    limits = info["limits"]
    assert (limits["max_batch"], limits["request_timeout"], limits["max_length"],
            limits["max_n"]) == (3, 300, 1023, 8)


def test_metrics_count_requests_tokens_and_engine_gauges(client):
    client.get("/?prefix=x")
    client.get("/?length=0")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'pokegen_http_requests_total{endpoint="/",status="200"} 1.0' in text
    assert 'pokegen_http_requests_total{endpoint="/",status="400"} 1.0' in text
    assert "pokegen_tokens_generated_total 4.0" in text
    assert "pokegen_queue_depth 2.0" in text and "pokegen_generations_in_flight 1.0" in text
    assert "pokegen_graph_ops 1234.0" in text
    assert "pokegen_draft_tokens_total 40.0" in text
    assert "pokegen_draft_tokens_accepted_total 25.0" in text
    assert "process_resident_memory_bytes" in text


def test_stream_whose_queue_wait_runs_out_is_a_plain_503(client, engine_double):
    def pieces_after_waiting_too_long(self):
        raise Busy("waited 30 s for a slot", 4)
        yield  # a generator, like the engine's

    engine_double.generation_pieces = pieces_after_waiting_too_long
    response = client.get("/stream?prefix=x")
    assert response.status_code == 503 and response.headers["Retry-After"] == "4"
    assert response.get_json()["error"] == "waited 30 s for a slot"
    assert len(engine_double.cancelled) == 1
