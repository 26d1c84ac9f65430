"""Several episodes per request on the real engine (tiny int8 model): decoded
together after one read of the prompt, each exactly the episode a single
request with its derived seed writes, counted as n slots, cancelled together."""
import json

import pytest

from app import create_app
from app.config import Config
from app.engine import ClientBusy, GenerationRequest
from app.engine.types import TooManyChoices, choice_seed
from engine_models import started_engine

PREFIX = "Ash and Pikachu meet a trainer"
LONG = dict(length=1000, stop_at_end=False, truncate=False)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    engine = started_engine(tiny_checkpoint, slow_turns=True, max_batch=3, max_queue=4,
                            max_per_client=4)
    yield engine
    engine.close()


def seeded(**options):
    return GenerationRequest(**{"prefix": PREFIX, "length": 50, "seed": 17, "temperature": 1.0,
                                "top_k": 50, "truncate": False, "stop_at_end": False,
                                **options})


def test_choice_seeds_are_stable_and_distinct():
    assert choice_seed(17, 0) == 17
    assert [choice_seed(17, i) for i in (1, 2)] == [choice_seed(17, 1), choice_seed(17, 2)]
    assert len({choice_seed(17, i) for i in range(8)}) == 8
    assert all(0 <= choice_seed(2**31 - 1, i) < 2**31 for i in range(8))


def test_each_choice_is_the_single_episode_of_its_derived_seed_and_the_prompt_is_read_once(
        engine):
    prompt_tokens = engine.count_tokens(PREFIX)
    before = engine.stats()["prompt_tokens_read"]
    result = engine.submit(seeded(n=3, no_repeat_ngram_size=3)).result(timeout=300)
    assert engine.stats()["prompt_tokens_read"] - before == prompt_tokens
    assert result.prompt_tokens == prompt_tokens
    texts = [choice.text for choice in result.choices]
    assert len(set(texts)) == 3 and all(c.tokens == 50 for c in result.choices)
    assert (result.text, result.tokens, result.finish_reason) == (texts[0], 50, "length")
    singles = [engine.submit(seeded(seed=choice_seed(17, i), no_repeat_ngram_size=3))
               .result(timeout=300).text for i in range(3)]
    assert texts == singles
    again = engine.submit(seeded(n=3, no_repeat_ngram_size=3)).result(timeout=300)
    assert [choice.text for choice in again.choices] == texts


def test_pieces_carry_their_choice_and_stops_apply_per_choice(engine):
    plain = engine.submit(seeded(n=2)).result(timeout=300).choices
    # A word that ends the first episode early and never occurs in the second.
    word = next(w for w in plain[0].text[len(PREFIX):].split()[3:]
                if len(w) > 3 and w not in plain[1].text)
    generation = engine.submit(seeded(n=2, stop=(word,)))
    streamed = ["", ""]
    for index, text in generation.indexed_pieces(timeout=300):
        streamed[index] += text
    stopped, untouched = generation.result(timeout=60).choices
    assert stopped.finish_reason == "stop" and untouched.finish_reason == "length"
    assert stopped.text == plain[0].text[:plain[0].text.index(word)]
    assert untouched.text == plain[1].text
    assert [PREFIX + text for text in streamed] == [stopped.text, untouched.text]
    with pytest.raises(ValueError):
        next(iter(engine.submit(seeded(n=2)).pieces()))


def test_a_request_holds_n_slots_and_its_client_n_places(engine):
    holder = engine.submit(GenerationRequest(prefix="Ash", n=3, **LONG), client="a")
    try:
        next(iter(holder.indexed_pieces(timeout=60)))
        stats = engine.stats()
        assert (stats["in_flight"], stats["queued"]) == (3, 0)
        with pytest.raises(ClientBusy):  # 3 held, at most 4 per client
            engine.submit(GenerationRequest(prefix="Ash", n=2, length=2), client="a")
        waiting = engine.submit(GenerationRequest(prefix="Ash", length=2), client="a")
        assert engine.stats()["queued"] == 1
    finally:
        holder.cancel()
    assert [c.finish_reason for c in holder.result(timeout=60).choices] == ["cancelled"] * 3
    assert waiting.result(timeout=60).tokens == 2
    assert engine.stats()["in_flight"] == 0 and engine.line.per_client() == {}


def test_more_choices_than_can_ever_run_at_once_are_refused(engine):
    with pytest.raises(TooManyChoices, match="at most 3 episodes"):
        engine.submit(seeded(n=4))
    client = create_app(Config(), engine=engine).test_client()
    answer = client.get("/", query_string={"prefix": "Ash", "n": 4})
    assert answer.status_code == 400 and answer.get_json()["parameter"] == "n"
    assert "at most 3" in answer.get_json()["error"]


def sse_events(body: str):
    for block in body.strip().split("\n\n"):
        event, data = block.split("\n", 1)
        yield event.removeprefix("event: "), json.loads(data.removeprefix("data: "))


def test_the_http_api_answers_every_choice(engine):
    client = create_app(Config(), engine=engine).test_client()
    query = {"prefix": PREFIX, "length": 30, "seed": 17, "n": 3, "truncate": "false"}
    answer = client.get("/", query_string=query).get_json()
    choices = answer["choices"]
    assert len(choices) == 3 and len({c["text"] for c in choices}) == 3
    assert (answer["text"], answer["tokens"]) == (choices[0]["text"], choices[0]["tokens"])
    single = client.get("/", query_string={**query, "n": 1}).get_json()
    assert "choices" not in single and single["text"] == choices[0]["text"]

    events = list(sse_events(client.get("/stream", query_string=query).get_data(as_text=True)))
    streamed = ["", "", ""]
    for event, data in events[:-1]:
        assert event == "piece"
        streamed[data["index"]] += data["text"]
    assert events[-1][0] == "done" and events[-1][1]["choices"] == choices
    assert [PREFIX + text for text in streamed] == [c["text"] for c in choices]
    metrics = client.get("/metrics").get_data(as_text=True)
    read = float(engine.stats()["prompt_tokens_read"])
    assert f"pokegen_engine_prompt_tokens_read {read}" in metrics
