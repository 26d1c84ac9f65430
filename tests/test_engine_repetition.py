"""Repetition control on the real engine (tiny int8 model): each control changes
what it should, and a seeded answer stays the same alone, batched, and with or
without speculative drafts."""
from collections import defaultdict

import pytest

from app.engine import GenerationRequest
from app.engine.scheduler import Scheduler, SchedulerSettings
from engine_models import started_engine

PREFIX = "Ash and Pikachu"
CONTROLS = dict(repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.3)


@pytest.fixture
def emitted(monkeypatch):
    """Every token each generation's episodes were given: {(generation, index): [tokens]}."""
    tokens = defaultdict(list)
    emit = Scheduler._emit

    def recording(self, seq, token):
        tokens[(seq.generation, seq.index)].append(token)
        return emit(self, seq, token)

    monkeypatch.setattr(Scheduler, "_emit", recording)
    return tokens


def request(**options):
    return GenerationRequest(**{"prefix": PREFIX, "length": 300, "seed": 3, "temperature": 0.0,
                                "truncate": False, "stop_at_end": False, **options})


def generated(engine, emitted, **options):
    generation = engine.submit(request(**options))
    generation.result(timeout=300)
    return emitted[(generation, 0)]


def repeated_ngrams(tokens, n):
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


def repeats(tokens):
    return len(tokens) - len(set(tokens))


def test_no_repeat_ngram_size_leaves_no_trigram_twice(engine, emitted):
    prompt = engine.encode(PREFIX)
    loose = generated(engine, emitted)
    assert repeated_ngrams(prompt + loose, 3) > 50  # greedy decoding of this model loops
    banned = generated(engine, emitted, no_repeat_ngram_size=3)
    assert len(banned) == 300 and repeated_ngrams(prompt + banned, 3) == 0


def test_presence_and_frequency_penalties_and_repetition_penalty_repeat_fewer_tokens(
        engine, emitted):
    loose = repeats(generated(engine, emitted, temperature=1.0))
    assert repeats(generated(engine, emitted, temperature=1.0, presence_penalty=2.0)) < loose / 2
    assert repeats(generated(engine, emitted, temperature=1.0, frequency_penalty=2.0)) < loose / 2
    assert repeats(generated(engine, emitted, temperature=1.0, repetition_penalty=2.0)) < loose / 2


# Greedy and mild; favouring repeats (drafts are kept most); all controls, the ban too.
VARIANTS = [dict(temperature=0.0, repetition_penalty=1.1, presence_penalty=0.2),
            dict(repetition_penalty=0.9, frequency_penalty=-0.5),
            dict(**CONTROLS, no_repeat_ngram_size=3)]


def seeded(variant):
    return request(**{"length": 120, "seed": 21, "temperature": 0.9, "top_k": 50, **variant})


def test_seeded_answers_are_the_same_alone_batched_and_with_or_without_drafts(tiny_checkpoint):
    answers = {}
    for speculative in (0, 4):
        engine = started_engine(tiny_checkpoint, max_batch=3, max_queue=4,
                                scheduling=SchedulerSettings(speculative_tokens=speculative))
        try:
            alone = [engine.submit(seeded(v)).result(timeout=300).text for v in VARIANTS]
            accepted = engine.stats()["draft_tokens_accepted"]
            # Join a batch that already runs, beside other settings.
            other = engine.submit(request(prefix="Misty and Brock", length=400, temperature=1.2,
                                          presence_penalty=-1.0, seed=None))
            next(iter(other.pieces(timeout=60)))
            batched = [engine.submit(seeded(v)) for v in VARIANTS[:2]]
            answers[speculative] = [g.result(timeout=300).text for g in batched]
            answers[speculative].append(engine.submit(seeded(VARIANTS[2])).result(timeout=300).text)
            assert answers[speculative] == alone
            other.cancel()
        finally:
            engine.close()
        assert (accepted > 0) == bool(speculative)  # alone, drafts were checked and kept
    assert answers[0] == answers[4]
