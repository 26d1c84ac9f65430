"""Stop strings: matched on the decoded text across token boundaries, never
shown, and the generation ends there."""
import os
import random

import numpy as np
import pytest

import train
from app.engine import Engine
from app.engine.admission import RequestLine
from app.engine.cache_pool import CachePool
from app.engine.generation import Generation
from app.engine.scheduler import Scheduler
from app.engine.stops import StopStrings
from app.engine.text import Tokenizer
from app.engine.types import GenerationRequest
from pokegen.gpt2_format import END_OF_TEXT



def test_text_that_may_start_a_stop_string_is_held_back():
    stops = StopStrings((END_OF_TEXT, "THE END"))
    assert stops.feed("Ash wins. <") == ("Ash wins. ", False)
    assert stops.feed("|end") == ("", False)
    assert stops.feed("oftext|> Next") == ("", True)


def test_held_text_is_released_when_it_turns_out_not_to_stop():
    stops = StopStrings((END_OF_TEXT,))
    assert stops.feed("a <|") == ("a ", False)
    assert stops.feed("b") == ("<|b", False)
    assert stops.feed("THE <|end") == ("THE ", False)
    assert stops.flush() == "<|end"
    assert stops.flush() == ""


def test_the_earliest_stop_string_wins_and_empty_ones_are_ignored():
    stops = StopStrings(("", "battle", "wins"))
    assert stops.feed("Pikachu wins the battle") == ("Pikachu ", True)
    assert StopStrings(()).feed("anything <|") == ("anything <|", False)


class ScriptedRunner:
    """The model's part in a step, played from a script: at each position the
    logits pick the script's next token. The scheduler's own logic is real."""
    ragged = True
    n_ctx = 1024

    def __init__(self, script, vocab):
        self.script, self.vocab = script, vocab

    def run(self, plan, pool):
        logits = []
        for segment in plan:
            if segment.logits == "none":
                logits.append(np.zeros((0, self.vocab), np.float32))
                continue
            ends = range(segment.start, segment.end + 1) if segment.logits == "all" else [segment.end]
            rows = np.zeros((len(ends), self.vocab), np.float32)
            for row, position in enumerate(ends):
                rows[row, self.script[position - len(segment.sequence.prompt) + 1]] = 10.0
            logits.append(rows)
        return logits


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return Tokenizer(os.path.join(tiny_checkpoint, "run1"), 4096)


def run_to_the_end(tokenizer, written, request):
    prompt = tokenizer.encode(request.prefix)
    script = tokenizer.encode(written)
    line = RequestLine(1, 0)
    scheduler = Scheduler(ScriptedRunner(script, 4096), CachePool(4096), tokenizer, line,
                          "scripted")
    generation = Generation(request, prompt, 30)
    line.submit(generation, None, 1)
    while not generation.done:
        scheduler._turn()
    return list(generation.pieces()), generation.result(), len(script)


def test_the_episode_delimiter_written_as_text_ends_the_answer(tokenizer):
    written = " wins the badge.\n<|endoftext|>\nMisty meets Togepi. Togepi cries."
    request = GenerationRequest(prefix="Ash", length=200, truncate=False)
    pieces, result, _ = run_to_the_end(tokenizer, written, request)
    assert result.finish_reason == "stop" and result.text == "Ash wins the badge.\n"
    assert "".join(pieces) == " wins the badge.\n" and not any("<" in p for p in pieces)


def test_a_requested_stop_string_ends_it_and_the_delimiter_can_be_kept(tokenizer):
    written = " cooks.\n<|endoftext|>\nMisty sings. THE END of it."
    request = GenerationRequest(prefix="Brock", length=200, truncate=False, stop_at_end=False,
                                stop=("THE END",))
    _, result, _ = run_to_the_end(tokenizer, written, request)
    assert result.finish_reason == "stop"
    assert result.text == "Brock cooks.\n<|endoftext|>\nMisty sings. "


def test_without_a_stop_the_answer_runs_to_its_length(tokenizer):
    written = " and Pikachu train all day long."
    pieces, result, tokens = run_to_the_end(tokenizer, written, GenerationRequest(
        prefix="Ash", length=len(tokenizer.encode(written)), truncate=False))
    assert result.finish_reason == "length" and result.tokens == tokens
    assert result.text == "Ash" + "".join(pieces)


@pytest.fixture(scope="module")
def delimited_model(tmp_path_factory):
    """A tiny model trained the way train.py trains, on short episodes joined by
    the delimiter: like every gpt-2-simple fine-tune, it learns to write the
    delimiter as ordinary text, never as the end-of-text token."""
    work = tmp_path_factory.mktemp("delimited")
    rng = random.Random(1)
    episodes = [f"{rng.choice(['Ash', 'Misty', 'Brock', 'Dawn'])} meets {p}. {p} wins the battle.\n"
                f"{END_OF_TEXT}\n" for p in (rng.choice(["Pikachu", "Togepi", "Psyduck", "Onix"])
                                             for _ in range(3000))]
    (work / "train.txt").write_text("".join(episodes), encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(work)  # train.py writes a samples/ folder into the working directory
    try:
        assert train.main(["--from-scratch", "tiny", "--dataset", str(work / "train.txt"),
                           "--val-dataset", "", "--checkpoint-dir", str(work / "checkpoint"),
                           "--model-dir", str(work / "models"), "--steps", "100",
                           "--learning-rate", "3e-3", "--sample-every", "1000",
                           "--save-every", "1000", "--val-every", "1000"]) == 0
    finally:
        os.chdir(cwd)
    engine = Engine(str(work / "checkpoint"), "run1", max_batch=3)
    engine.start()
    assert engine.wait_ready(120), engine.error
    yield engine
    engine.close()


@pytest.mark.slow
def test_a_model_trained_on_delimited_episodes_stops_at_the_delimiter(delimited_model):
    def episodes(**options):
        generations = [delimited_model.submit(GenerationRequest(
            prefix="Misty meets Onix.", length=120, seed=seed, truncate=False, **options))
            for seed in range(6)]
        return [(list(g.pieces()), g.result(timeout=120)) for g in generations]

    # Asked to run on, the model writes the delimiter and a next episode ...
    assert all(END_OF_TEXT in result.text for _, result in episodes(stop_at_end=False))
    # ... which by default it never shows: each answer is one episode.
    for pieces, result in episodes():
        assert result.finish_reason == "stop" and result.tokens < 120
        assert "<|" not in result.text and not any("<" in piece for piece in pieces)
        assert result.text == "Misty meets Onix." + "".join(pieces)
