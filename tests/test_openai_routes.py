"""/v1/completions and /v1/models through Flask's test client, with an engine
double: OpenAI's shapes, defaults, refusals in OpenAI's error shape, and
cancellation. The official client against the real stack is in
test_openai_client_e2e.py."""
import json

import pytest

from app.engine.types import Busy, ClientBusy, GenerationResult


def complete(client, **body):
    return client.post("/v1/completions", data=json.dumps(body), content_type="application/json",
                       buffered=True)


def openai_error(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json; charset=utf-8"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def data_lines(response):
    blocks = response.get_data(as_text=True).split("\n\n")
    assert blocks[-1] == "" and all(block.startswith("data: ") for block in blocks[:-1])
    return [block[len("data: "):] for block in blocks[:-1]]


def test_models_lists_the_served_model(client):
    listed = client.get("/v1/models").get_json()
    assert listed["object"] == "list" and len(listed["data"]) == 1
    model = listed["data"][0]
    assert (model["id"], model["object"], model["owned_by"]) == ("double", "model", "pokegen")
    assert isinstance(model["created"], int)


def test_a_completion_is_openais_object_with_openais_defaults(client, engine_double):
    response = complete(client, model="double", prompt="Ash and")
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert isinstance(body["created"], int) and body["model"] == "double"
    # The double's text is the prefix (unless include_prefix is off), a space, then the pieces.
    assert body["choices"] == [{"text": " Then Team Rocket came.", "index": 0, "logprobs": None,
                                "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    request = engine_double.submitted[0]
    assert (request.prefix, request.length, request.temperature, request.top_k,
            request.top_p) == ("Ash and", 16, 1.0, 0, 1.0)
    assert not request.truncate and not request.include_prefix
    assert (request.frequency_penalty, request.presence_penalty, request.n) == (0, 0, 1)


def test_every_supported_parameter_is_forwarded(client, engine_double):
    response = complete(client, model="double", prompt="Misty", max_tokens=7, temperature=0.3,
                        top_p=0.9, n=3, stop=["\n", "END"], seed=5, frequency_penalty=0.5,
                        presence_penalty=-1, stream=False, logprobs=None, echo=None)
    assert response.status_code == 200
    request = engine_double.submitted[0]
    assert (request.length, request.temperature, request.top_p, request.n, request.stop,
            request.seed, request.frequency_penalty, request.presence_penalty) == \
        (7, 0.3, 0.9, 3, ("\n", "END"), 5, 0.5, -1)


@pytest.mark.parametrize("finish, expected", [("stop", "stop"), ("end_of_text", "stop"),
                                              ("length", "length")])
def test_finish_reasons_in_openais_words(client, engine_double, monkeypatch, finish, expected):
    def result(self, timeout=None):
        return GenerationResult(text="x", prefix="p", tokens=1, seconds=0.0, model="double",
                                finish_reason=finish)
    monkeypatch.setattr("engine_double.GenerationDouble.result", result)
    assert complete(client, model="double", prompt="p").get_json()["choices"][0][
        "finish_reason"] == expected


def test_a_completion_cut_by_shutdown_is_a_503_not_a_short_text(client, monkeypatch):
    def result(self, timeout=None):
        return GenerationResult(text="x", prefix="p", tokens=1, seconds=0.0, model="double",
                                finish_reason="shutdown")
    monkeypatch.setattr("engine_double.GenerationDouble.result", result)
    error = openai_error(complete(client, model="double", prompt="p"), 503)
    assert "shutting down" in error["message"] and error["type"] == "server_error"


def test_a_stream_is_openais_chunks_then_done(client):
    response = complete(client, model="double", prompt="Go", stream=True)
    assert response.status_code == 200
    assert response.content_type.startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    lines = data_lines(response)
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert len({chunk["id"] for chunk in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert all(chunk["object"] == "text_completion" and "usage" not in chunk for chunk in chunks)
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == "Then Team Rocket came."
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None] * 4 + ["length"]
    assert all(chunk["choices"][0]["index"] == 0 and chunk["choices"][0]["logprobs"] is None
               for chunk in chunks)


def test_a_stream_with_include_usage_ends_with_the_usage(client):
    response = complete(client, model="double", prompt="Go on", stream=True,
                        stream_options={"include_usage": True})
    lines = data_lines(response)
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


def test_closing_a_stream_early_cancels_the_completion(client, engine_double):
    response = client.post("/v1/completions", data=json.dumps(
        {"model": "double", "prompt": "x", "stream": True}), content_type="application/json",
        buffered=False)
    assert next(response.response).startswith(b"data: {")
    response.close()
    assert len(engine_double.cancelled) == 1


def test_the_wrong_model_is_openais_404(client, engine_double):
    error = openai_error(complete(client, model="gpt-3.5-turbo-instruct", prompt="x"), 404)
    assert error == {"message": "the model 'gpt-3.5-turbo-instruct' does not exist: this "
                                "server serves 'double' (GET /v1/models)",
                     "type": "invalid_request_error", "param": "model",
                     "code": "model_not_found"}
    assert engine_double.submitted == []


@pytest.mark.parametrize("name, value", [("logprobs", 1), ("logprobs", 0), ("best_of", 2),
                                         ("suffix", "end"), ("echo", True), ("echo", False),
                                         ("logit_bias", {"50256": -100}), ("user", "ash")])
def test_unsupported_parameters_are_a_400_naming_them(client, engine_double, name, value):
    error = openai_error(complete(client, model="double", prompt="x", **{name: value}), 400)
    assert (error["param"], error["code"], error["type"]) == \
        (name, "unsupported_parameter", "invalid_request_error")
    assert name in error["message"]
    assert engine_double.submitted == []


@pytest.mark.parametrize("prompt", [["a", "b"], ["a"], [1, 2, 3], [[1, 2]]])
def test_prompt_lists_and_token_ids_are_refused(client, engine_double, prompt):
    error = openai_error(complete(client, model="double", prompt=prompt), 400)
    assert error["param"] == "prompt" and error["code"] == "unsupported_parameter"
    assert engine_double.submitted == []


@pytest.mark.parametrize("body, param, words", [
    ({"prompt": "x"}, "model", "model is required"),
    ({"model": "double"}, "prompt", "prompt is required"),
    ({"model": "double", "prompt": 3}, "prompt", "must be a string"),
    ({"model": "double", "prompt": "x" * 1001}, "prompt", "at most 1000 characters"),
    ({"model": "double", "prompt": "x", "max_tokens": 0}, "max_tokens", "from 1 to 1023"),
    ({"model": "double", "prompt": "x", "max_tokens": "5"}, "max_tokens", "an integer"),
    ({"model": "double", "prompt": "x", "temperature": 6}, "temperature", "from 0 to 5"),
    ({"model": "double", "prompt": "x", "n": 9}, "n", "from 1 to 8"),
    ({"model": "double", "prompt": "x", "stop": [1]}, "stop", "a list of strings"),
    ({"model": "double", "prompt": "x", "stream": "yes"}, "stream", "a JSON boolean"),
    ({"model": "double", "prompt": "x", "stream_options": {"include_usage": True}},
     "stream_options", "only allowed with stream: true"),
    ({"model": "double", "prompt": "x", "stream": True, "stream_options": {"x": 1}},
     "stream_options", "only \"include_usage\""),
    ({"model": "double", "prompt": "x", "top_k": 5}, "top_k", "unknown parameter 'top_k'"),
])
def test_bad_parameters_are_a_400_in_openais_shape(client, engine_double, body, param, words):
    error = openai_error(complete(client, **body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert words in error["message"], error["message"]
    assert engine_double.submitted == []


def test_a_prompt_too_long_for_the_context_names_max_tokens(client, engine_double):
    engine_double.info["hparams"]["n_ctx"] = 10
    error = openai_error(complete(client, model="double", prompt="a b c", max_tokens=8), 400)
    assert error["param"] == "max_tokens" and error["code"] == "context_length_exceeded"
    assert "ask for at most max_tokens=7" in error["message"] and "the prompt is 3" in \
        error["message"]


def test_busy_and_client_busy_are_503_and_429_with_retry_after(client, engine_double, monkeypatch):
    engine_double.busy_reason = "all generation slots are busy"
    response = complete(client, model="double", prompt="x")
    assert openai_error(response, 503)["type"] == "server_error"
    assert response.headers["Retry-After"] == "7"

    def refuse(request, client=None):
        raise ClientBusy("this client already has 4 generations running", 3)
    monkeypatch.setattr(engine_double, "submit", refuse)
    response = complete(client, model="double", prompt="x")
    assert openai_error(response, 429)["type"] == "rate_limit_error"
    assert response.headers["Retry-After"] == "3"


def test_loading_and_failed_models_are_503(client, engine_double):
    engine_double.state = "loading"
    response = complete(client, model="anything", prompt="x")  # the name is not known yet
    assert "still loading" in openai_error(response, 503)["message"]
    assert int(response.headers["Retry-After"]) >= 1
    engine_double.state, engine_double.error = "failed", "no checkpoint"
    assert "no checkpoint" in openai_error(complete(client, model="double", prompt="x"),
                                           503)["message"]


def test_a_stream_whose_queue_wait_runs_out_is_a_plain_503(client, engine_double):
    def pieces_after_waiting_too_long(self):
        raise Busy("waited 30 s for a slot", 4)
        yield  # a generator, like the engine's
    engine_double.generation_pieces = pieces_after_waiting_too_long
    response = complete(client, model="double", prompt="x", stream=True)
    assert openai_error(response, 503)["message"] == "waited 30 s for a slot"
    assert response.headers["Retry-After"] == "4" and len(engine_double.cancelled) == 1


def test_body_refusals_and_routing_errors_are_in_openais_shape(client):
    assert openai_error(client.post("/v1/completions", data=b"{"), 415)["param"] is None
    assert "not valid JSON" in openai_error(
        client.post("/v1/completions", data=b"{", content_type="application/json"),
        400)["message"]
    assert openai_error(client.get("/v1/completions"), 405)["type"] == "invalid_request_error"
    assert openai_error(client.get("/v1/nothing"), 404)["message"] == "no such path: /v1/nothing"
    # Outside /v1, pokegen's own shape.
    assert client.get("/nothing").get_json()["status"] == 404
