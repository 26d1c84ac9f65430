"""What each decoding step runs: chunked prompts and speculative drafts, on a
tiny int8 model. Neither may change an answer; both must really happen."""
import pytest

from app.engine import GenerationRequest
from app.engine.corpus_drafts import write_table
from app.engine.drafts import PromptLookup
from app.engine.runner import StepRunner
from app.engine.scheduler import SchedulerSettings
from engine_models import copy_tiny_run, started_engine

CHUNK = 8
LONG_PREFIX = " ".join(f"Ash meets trainer number {i} and battles." for i in range(40))


def started(checkpoint_dir, **settings):
    return started_engine(checkpoint_dir, max_batch=3, max_queue=2,
                          scheduling=SchedulerSettings(**settings))


@pytest.fixture
def recorded_plans(monkeypatch):
    """Every step's plan as (sequence id, prompt read so far or None, tokens) tuples."""
    plans = []
    run = StepRunner.run

    def recording(self, plan, pool):
        plans.append([(id(s.sequence), s.sequence.read if s.sequence.prefilling else None,
                       len(s.tokens)) for s in plan])
        return run(self, plan, pool)

    monkeypatch.setattr(StepRunner, "run", recording)
    return plans


def seeded(prefix, **options):
    return GenerationRequest(**{"prefix": prefix, "length": 40, "seed": 7, "temperature": 0.9,
                                "top_k": 50, "truncate": False, "stop_at_end": False, **options})


def test_prompt_lookup_proposes_what_followed_the_latest_match():
    drafts = PromptLookup([5, 6, 7, 8, 1, 5, 6, 9, 2, 5, 6])
    assert drafts.propose(3) == [9, 2, 5]      # the latest "5 6" was followed by 9 2 5
    drafts.append(9)
    assert drafts.propose(2) == [2, 5]         # "5 6 9" seen once: the 3-gram wins
    assert drafts.propose(0) == []
    assert PromptLookup([1, 2, 3]).propose(4) == []  # no earlier occurrence of any tail
    with pytest.raises(ValueError):
        PromptLookup([], max_ngram=1, min_ngram=2)


def test_a_long_prompt_is_read_in_chunks_while_a_stream_runs(tiny_checkpoint, recorded_plans):
    engine = started(tiny_checkpoint, prefill_chunk=CHUNK, speculative_tokens=0)
    try:
        alone = engine.submit(seeded(LONG_PREFIX)).result(timeout=120)
        running = engine.submit(seeded("Misty", length=600))
        next(iter(running.pieces()))
        recorded_plans.clear()
        joined = engine.submit(seeded(LONG_PREFIX)).result(timeout=120)
        running.cancel()
        running.result(timeout=60)
    finally:
        engine.close()
    # Read a chunk at a time, the stream advancing in the same steps, and the
    # answer the same as when the prompt was read in one go.
    assert joined.text == alone.text and joined.tokens == 40
    prompt_tokens = engine.count_tokens(LONG_PREFIX)
    reading = [plan for plan in recorded_plans if any(read is not None for _, read, _ in plan)]
    chunks = [sum(n for _, read, n in plan if read is not None) for plan in reading]
    assert sum(chunks) == prompt_tokens and len(chunks) > 1
    assert chunks[0] == 1 and max(chunks) <= CHUNK  # the first learns a prompt token's cost
    for plan in reading:
        assert any(read is None for _, read, _ in plan)  # the running stream took its token


def test_speculation_never_changes_an_answer_and_really_drafts(tiny_checkpoint):
    requests = [seeded("Pikachu and Ash were", length=120, temperature=0),        # greedy: loops
                seeded("Brock cooks dinner", length=80, seed=3),
                seeded("Team Rocket", length=60, seed=11, top_p=0.9)]
    plain = started(tiny_checkpoint, speculative_tokens=0)
    try:
        expected = [plain.submit(r).result(timeout=120).text for r in requests]
    finally:
        plain.close()
    speculating = started(tiny_checkpoint, speculative_tokens=4, speculate_up_to=3)
    try:
        alone = [speculating.submit(r).result(timeout=120).text for r in requests]
        batched = [g.result(timeout=120).text for g in [speculating.submit(r) for r in requests]]
        stats = speculating.stats()
    finally:
        speculating.close()
    assert alone == expected and batched == expected
    # A greedy tiny model repeats itself: its drafts are checked and some kept.
    assert stats["draft_tokens"] > 0 and 0 < stats["draft_tokens_accepted"] <= stats["draft_tokens"]


def test_speculation_stops_drafting_past_its_batch_bound(tiny_checkpoint, recorded_plans):
    engine = started(tiny_checkpoint, speculative_tokens=4, speculate_up_to=1)
    try:
        generations = [engine.submit(seeded("Pikachu and Ash were", length=60, temperature=0))
                       for _ in range(2)]
        for generation in generations:
            generation.result(timeout=120)
    finally:
        engine.close()
    for plan in recorded_plans:
        decoding = [n for _, read, n in plan if read is None]
        if len(decoding) > 1:
            assert decoding == [1] * len(decoding)


def test_drafts_from_the_training_text_never_change_an_answer(tmp_path):
    checkpoint_dir = str(tmp_path)
    run_dir = copy_tiny_run(checkpoint_dir)
    plain = started(checkpoint_dir, speculative_tokens=0)
    requests = [seeded("Ash and Pikachu", length=80, temperature=0),
                seeded("Ash and Pikachu", length=80, seed=5)]
    try:
        # What this random model writes, as the text its table is made of: its drafts are right.
        expected = [plain.submit(r).result(timeout=120).text for r in requests]
    finally:
        plain.close()
    (tmp_path / "train.txt").write_text("\n".join(expected), encoding="utf-8")
    write_table(run_dir, str(tmp_path / "train.txt"))
    speculating = started(checkpoint_dir, speculative_tokens=4)
    try:
        answers = [speculating.submit(r).result(timeout=120).text for r in requests]
        stats = speculating.stats()
    finally:
        speculating.close()
    assert answers == expected
    # Many of the answers' tokens were guessed from the table and kept.
    assert stats["draft_tokens_accepted"] > 20
