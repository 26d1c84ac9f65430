"""The engine end to end on a tiny checkpoint: continuous batching, seeds,
the cap with its bounded queue, cancel, text options, a graph that stays put."""
import threading
import time

import pytest

from app.engine import Busy, GenerationRequest
from engine_models import started_engine
from pokegen.service_stack import wait_for

LONG = dict(length=1000, stop_at_end=False)  # long enough to still run while we look


@pytest.fixture
def single(tiny_checkpoint):
    """One slot and one waiting place, for the cap and queue rules."""
    engine = started_engine(tiny_checkpoint, slow_turns=True, max_batch=1, max_queue=1,
                            queue_timeout=30)
    yield engine
    engine.close(grace=0)


def test_ready_engine_describes_itself(engine):
    assert engine.state == "ready" and engine.error is None
    assert engine.info["hparams"]["n_ctx"] == 1024
    assert engine.info["limits"]["max_batch"] == 3
    assert engine.stats()["in_flight"] == 0
    assert engine.count_tokens("Ash and Pikachu") >= 2


def test_length_prefix_and_pieces(engine):
    generation = engine.submit(GenerationRequest(prefix="Ash and Pikachu", length=25, seed=5,
                                                 truncate=False, stop_at_end=False))
    pieces = list(generation.pieces())
    result = generation.result(timeout=30)
    assert result.tokens == 25 and result.finish_reason == "length"
    assert result.prefix == "Ash and Pikachu"
    assert result.text == "Ash and Pikachu" + "".join(pieces)
    assert result.model == engine.model_name and result.seconds > 0
    # One episode: its only choice is the result itself.
    assert [(c.text, c.tokens, c.finish_reason) for c in result.choices] == [
        (result.text, 25, "length")]
    assert result.prompt_tokens == engine.count_tokens("Ash and Pikachu")


def test_indexed_pieces_of_one_episode_carry_index_zero(engine):
    generation = engine.submit(GenerationRequest(prefix="Misty", length=12, seed=5,
                                                 truncate=False, stop_at_end=False))
    indexed = list(generation.indexed_pieces(timeout=60))
    assert indexed and {index for index, _ in indexed} == {0}
    assert generation.result(timeout=60).text == "Misty" + "".join(t for _, t in indexed)


def test_include_prefix_and_truncate(engine):
    def text(**options):
        return engine.submit(GenerationRequest(prefix="Misty", length=60, seed=9, top_k=0,
                                               temperature=1.2, stop_at_end=False,
                                               **options)).result(timeout=60).text
    whole = text(truncate=False)
    assert whole.startswith("Misty")
    assert text(truncate=False, include_prefix=False) == whole[len("Misty"):]
    cut = text(truncate=True)
    assert whole.startswith(cut)
    if cut != whole:
        assert cut.rstrip("\"')]\u201d\u2019")[-1] in ".!?"


def test_seeded_request_gives_the_same_text_alone_and_batched(engine):
    seeded = GenerationRequest(prefix="Team Rocket", length=60, seed=1234, temperature=1.0,
                               top_k=50, top_p=0.95, truncate=False, stop_at_end=False)
    alone = engine.submit(seeded).result(timeout=60).text
    # Joins a batch that is already running, next to requests with other
    # prefixes, lengths and sampling settings.
    others = [engine.submit(GenerationRequest(prefix="Brock cooks dinner for everyone", length=90,
                                              temperature=1.3, top_k=0, stop_at_end=False))]
    next(iter(others[0].pieces()))
    batched = engine.submit(seeded)
    others.append(engine.submit(GenerationRequest(prefix="Misty", length=30, seed=3, top_p=0.5)))
    assert batched.result(timeout=60).text == alone
    for generation in others:
        generation.result(timeout=60)
    different = engine.submit(GenerationRequest(**{**seeded.__dict__, "seed": 4321}))
    assert different.result(timeout=60).text != alone


def test_short_request_finishes_before_a_long_one_that_started_earlier(engine):
    long = engine.submit(GenerationRequest(prefix="The long episode", **LONG))
    next(iter(long.pieces()))
    short = engine.submit(GenerationRequest(prefix="A short one", length=5, stop_at_end=False))
    assert short.result(timeout=30).tokens == 5
    assert not long.done
    long.cancel()
    assert long.result(timeout=30).finish_reason == "cancelled"


def test_graph_does_not_grow_across_generations(engine):
    before = engine.graph_ops()
    generations = [engine.submit(GenerationRequest(prefix=f"Episode {i}", length=8 + i, seed=i))
                   for i in range(3)]
    for _ in range(4):
        for generation in generations:
            generation.result(timeout=60)
        generations = [engine.submit(GenerationRequest(prefix=f"Episode {i}", length=8 + i))
                       for i in range(3)]
    for generation in generations:
        generation.result(timeout=60)
    assert engine.graph_ops() == before
    assert engine.stats()["in_flight"] == 0 and engine.stats()["queued"] == 0


def test_cap_queue_and_busy_at_once(single):
    running = single.submit(GenerationRequest(**LONG))
    waiting = single.submit(GenerationRequest(length=3))
    assert single.stats()["in_flight"] == 1 and single.stats()["queued"] == 1
    started_at = time.monotonic()
    with pytest.raises(Busy) as refused:
        single.submit(GenerationRequest(length=3))
    assert time.monotonic() - started_at < 0.5
    assert refused.value.retry_after >= 1
    assert not waiting.done
    running.cancel()
    assert waiting.result(timeout=30).tokens >= 1


def test_queued_request_gets_busy_when_its_wait_runs_out(tiny_checkpoint):
    engine = started_engine(tiny_checkpoint, slow_turns=True, max_batch=1, max_queue=2,
                            queue_timeout=0.3)
    try:
        running = engine.submit(GenerationRequest(**LONG))
        waiting = engine.submit(GenerationRequest(length=3))
        streaming = engine.submit(GenerationRequest(length=3))
        with pytest.raises(Busy):
            waiting.result(timeout=10)
        with pytest.raises(Busy):
            list(streaming.pieces())
        assert engine.stats()["queued"] == 0
        assert not running.done
        running.cancel()
    finally:
        engine.close(grace=0)


def test_cancel_frees_the_slot_for_the_next_request(single):
    running = single.submit(GenerationRequest(**LONG))
    next(iter(running.pieces()))
    running.cancel()
    result = running.result(timeout=30)
    assert result.finish_reason == "cancelled" and result.tokens < 1000
    assert wait_for(lambda: single.stats()["in_flight"] == 0)
    assert single.submit(GenerationRequest(length=4, stop_at_end=False)).result(timeout=30).tokens == 4


def test_cancelled_while_waiting_never_runs(single):
    running = single.submit(GenerationRequest(**LONG))
    waiting = single.submit(GenerationRequest(length=3))
    waiting.cancel()
    result = waiting.result(timeout=30)
    assert result.tokens == 0 and result.finish_reason == "cancelled"
    running.cancel()


def test_many_threads_submit_at_once(engine):
    outcomes = []

    def client(i):
        try:
            outcomes.append(engine.submit(GenerationRequest(length=6, seed=i)).result(timeout=60).tokens)
        except Busy:
            outcomes.append("busy")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 3 slots + 4 waiting places: at least 7 served, the rest refused at once
    assert sum(1 for o in outcomes if o != "busy") >= 7
    assert all(o == "busy" or 1 <= o <= 6 for o in outcomes)


def test_close_refuses_new_requests_and_ends_running_ones(tiny_checkpoint):
    engine = started_engine(tiny_checkpoint, slow_turns=True, max_batch=1, max_queue=1)
    running = engine.submit(GenerationRequest(**LONG))
    waiting = engine.submit(GenerationRequest(length=3))
    next(iter(running.pieces()))
    engine.close(grace=0.2)
    assert running.result(timeout=1).finish_reason == "shutdown"
    with pytest.raises(Busy):
        waiting.result(timeout=1)
    with pytest.raises(Busy):
        engine.submit(GenerationRequest())
    assert not engine._thread.is_alive()


def test_a_request_waits_for_room_in_the_cache_pool(tiny_checkpoint):
    # Room for one full context only: the second request starts when the first ends.
    engine = started_engine(tiny_checkpoint, max_batch=2, max_queue=2, cache_tokens=1024)
    try:
        first = engine.submit(GenerationRequest(length=700, stop_at_end=False))
        second = engine.submit(GenerationRequest(length=700, stop_at_end=False))
        next(iter(first.pieces()))
        assert engine.stats()["in_flight"] == 2
        next(iter(second.pieces()))
        assert first.done  # the second wrote nothing before the first gave its places back
        assert first.result(timeout=60).tokens == 700
        assert second.result(timeout=60).tokens == 700
        assert engine.stats()["in_flight"] == 0
    finally:
        engine.close(grace=0)


def test_a_request_the_engine_cannot_run_cannot_be_made_and_the_engine_keeps_serving(engine):
    for bad in (dict(seed=-1), dict(top_p=0.0), dict(temperature=-1.0), dict(length=0)):
        with pytest.raises(ValueError):
            GenerationRequest(**bad)
    assert engine.submit(GenerationRequest(length=3, stop_at_end=False)).result(timeout=30).tokens == 3


def test_without_the_kernel_the_engine_serves_float32_weights_and_says_why(
        tiny_checkpoint, monkeypatch, caplog):
    from app.engine import packed_weights

    def missing():
        raise packed_weights.KernelUnavailable("kernel.so is not built")

    monkeypatch.setattr(packed_weights, "load_kernel", missing)
    engine = started_engine(tiny_checkpoint, max_batch=2, weight_dtype="bfloat16")
    try:
        assert engine.info["limits"]["weight_dtype"] == "float32"
        assert engine.submit(GenerationRequest(prefix="Ash", length=5, stop_at_end=False)
                             ).result(timeout=60).tokens == 5
    finally:
        engine.close()
    assert "serving float32 weights" in caplog.text and "kernel.so is not built" in caplog.text


def test_the_default_engine_holds_int8_weights(engine):
    assert engine.info["limits"]["weight_dtype"] == "int8"
