"""OpenAI's official Python client against the real stack (nginx + uWSGI +
the engine on a tiny model, on 127.0.0.1): models, a completion, a stream,
stop strings and refusals, each checked against the service's own GET API
with the same settings (greedy decoding, so the texts must match)."""
import os
import subprocess
import sys

import openai
import pytest
import requests

from live_generation import SLOW_TURNS
from pokegen.service_stack import ROOT

pytestmark = pytest.mark.e2e

PROMPT = "Pikachu and Ash were"
# What /v1/completions does with these, asked of GET / by its own names.
GREEDY = {"prefix": PROMPT, "temperature": "0", "top_k": "0", "truncate": "0",
          "include_prefix": "0", "no_repeat_ngram_size": "0"}


@pytest.fixture(scope="module")
def stack(start_stack):
    # Slow turns: a stream read as it is written comes in many chunks, however fast the CPU.
    return start_stack(GENERATION_CONCURRENCY=2, **SLOW_TURNS)


@pytest.fixture(scope="module")
def client(stack):
    # No retries: a refusal must reach the test as it was answered.
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


def episode(stack, **query) -> dict:
    response = stack.get("/", params={**GREEDY, **query})
    assert response.status_code == 200, response.text
    return response.json()


def test_models_lists_the_one_served_model(stack, client):
    models = client.models.list().data
    assert [m.id for m in models] == [stack.get("/readyz").json()["model"]]
    assert models[0].object == "model" and models[0].owned_by == "pokegen"


def test_a_completion_is_the_episode_of_the_same_settings(stack, client, model):
    completion = client.completions.create(model=model, prompt=PROMPT, max_tokens=12,
                                           temperature=0, seed=1)
    same = episode(stack, length="12", seed="1")
    assert completion.object == "text_completion" and completion.model == model
    assert completion.id.startswith("cmpl-")
    [choice] = completion.choices
    assert (choice.index, choice.logprobs) == (0, None)
    assert choice.text == same["text"] and choice.text  # the prefix is not echoed
    assert choice.finish_reason == {"length": "length"}.get(same["finish_reason"], "stop")
    prompt_tokens = completion.usage.prompt_tokens
    assert prompt_tokens >= 1 and completion.usage.completion_tokens == same["tokens"]
    assert completion.usage.total_tokens == prompt_tokens + same["tokens"]


def test_the_default_length_is_openais_16_tokens(stack, client, model):
    completion = client.completions.create(model=model, prompt=PROMPT, temperature=0, seed=2)
    same = episode(stack, length="16", seed="2")
    assert completion.choices[0].text == same["text"]
    assert completion.usage.completion_tokens == same["tokens"]


def test_n_completions_are_the_n_episodes_of_the_same_seed(stack, client, model):
    completion = client.completions.create(model=model, prompt=PROMPT, max_tokens=20, n=2,
                                           seed=11, temperature=1.0)
    same = episode(stack, length="20", seed="11", n="2", temperature="1.0")
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.text for c in completion.choices] == [c["text"] for c in same["choices"]]
    assert len({c.text for c in completion.choices}) == 2  # each on its own seed
    assert completion.usage.completion_tokens == sum(c["tokens"] for c in same["choices"])
    streamed = {}
    finished = {}
    for chunk in client.completions.create(model=model, prompt=PROMPT, max_tokens=20, n=2,
                                           seed=11, temperature=1.0, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
            if c.finish_reason:
                finished[c.index] = c.finish_reason
    assert [streamed[i] for i in range(2)] == [c.text for c in completion.choices]
    assert sorted(finished) == [0, 1]


def test_a_stream_is_the_completion_in_chunks_then_the_usage(client, model):
    whole = client.completions.create(model=model, prompt=PROMPT, max_tokens=40, temperature=0)
    chunks = list(client.completions.create(model=model, prompt=PROMPT, max_tokens=40,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) > 2 and "".join(texts) == whole.choices[0].text
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_a_stop_string_ends_the_text_before_it(client, model):
    whole = client.completions.create(model=model, prompt=PROMPT, max_tokens=40,
                                      temperature=0).choices[0].text
    stop = whole[len(whole) // 2:len(whole) // 2 + 4]
    assert len(stop.strip()) >= 2, whole  # something that can be found again
    for stops in (stop, [stop, "\x01never"]):
        cut = client.completions.create(model=model, prompt=PROMPT, max_tokens=40,
                                        temperature=0, stop=stops).choices[0]
        assert cut.text == whole[:whole.index(stop)] and cut.finish_reason == "stop"


@pytest.mark.parametrize("kwargs, param", [
    ({"logprobs": 2}, "logprobs"),
    ({"echo": True}, "echo"),
    ({"best_of": 2}, "best_of"),
    ({"suffix": "THE END"}, "suffix"),
    ({"max_tokens": 2000}, "max_tokens"),
])
def test_unsupported_or_bad_parameters_are_a_bad_request_naming_them(client, model, kwargs,
                                                                     param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt=PROMPT, **kwargs)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert param in caught.value.message


def test_a_prompt_list_is_refused(client, model):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt=["Ash", "Misty"])
    assert caught.value.param == "prompt" and caught.value.code == "unsupported_parameter"


def test_another_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def test_a_prompt_too_long_for_the_context_names_max_tokens(client, model):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt="Ash " * 250, max_tokens=1000)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "max_tokens"


def test_the_session_script_runs_against_the_stack(stack):
    """scripts/openai_session.py, whose output the README quotes, works as shown."""
    ran = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "openai_session.py"),
                          "--base-url", stack.url + "/v1"], capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr
    for heading in ("models", "completion", "stream", "n=2", "stop", "refused"):
        assert f"## {heading}" in ran.stdout, ran.stdout
    assert "BadRequestError" in ran.stdout and "Traceback" not in ran.stderr


def test_the_stack_logged_no_traceback(stack):
    requests.get(stack.url + "/healthz", timeout=10)
    with open(stack.log_path, encoding="utf-8", errors="replace") as log:
        text = log.read()
    assert "Traceback" not in text and "unhandled error" not in text, text[-4000:]
