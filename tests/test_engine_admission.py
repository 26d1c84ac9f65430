"""Admission on the real engine (tiny checkpoint): every refusal that costs
nothing comes before the prefix is tokenized, each client holds at most its
share, a queue full for everyone is a 503 and a client over its share a 429,
and a loop that stops stepping with work pending is reported as stalled."""
import os
import random
import threading
import time

import pytest

from app import create_app
from app.config import Config
from app.engine import Busy, ClientBusy, GenerationRequest
from app.engine import faults
from engine_models import started_engine
from live_generation import FrozenLoop

LONG = dict(length=1000, stop_at_end=False, truncate=False)


@pytest.fixture
def full_engine(tiny_checkpoint):
    """One slot, no waiting place, and a long generation holding the slot."""
    engine = started_engine(tiny_checkpoint, slow_turns=True, max_batch=1, max_queue=0)
    holder = engine.submit(GenerationRequest(prefix="Ash", seed=1, **LONG))
    next(iter(holder.pieces(timeout=60)))
    yield engine
    holder.cancel()
    engine.close(grace=0)


class CountingEncode:
    """Wraps the engine's tokenizer to count its calls (it still tokenizes)."""

    def __init__(self, tokenizer):
        self.calls = 0
        self._encode = tokenizer.encode
        tokenizer.encode = self

    def __call__(self, text):
        self.calls += 1
        return self._encode(text)


def long_distinct_prefixes(count, seed=0):
    """Prefixes of 1000 distinct CJK characters: the longest, costliest to tokenize."""
    rng = random.Random(seed)
    return ["".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(1000))
            for _ in range(count)]


def test_a_full_engine_refuses_a_flood_of_long_prefixes_without_tokenizing_them(full_engine):
    tokenize = CountingEncode(full_engine._tokenizer)
    cache_before = full_engine.stats()["tokenizer_cache_bytes"]
    for prefix in long_distinct_prefixes(50):
        with pytest.raises(Busy) as refused:
            full_engine.submit(GenerationRequest(prefix=prefix, length=5))
        assert "slots are busy" in refused.value.reason and refused.value.retry_after >= 1
    assert tokenize.calls == 0
    assert full_engine.stats()["tokenizer_cache_bytes"] == cache_before


def test_the_http_layer_answers_busy_before_tokenizing(full_engine):
    tokenize = CountingEncode(full_engine._tokenizer)
    client = create_app(Config(), engine=full_engine).test_client()
    for prefix in long_distinct_prefixes(20, seed=1):
        for path in ("/", "/stream"):
            answer = client.get(path, query_string={"prefix": prefix, "length": 5})
            assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
    assert tokenize.calls == 0


def test_each_client_holds_at_most_its_share(tiny_checkpoint):
    engine = started_engine(tiny_checkpoint, slow_turns=True,
                            max_batch=3, max_queue=4, max_per_client=2)
    try:
        a1 = engine.submit(GenerationRequest(prefix="Ash", **LONG), client="a")
        a2 = engine.submit(GenerationRequest(prefix="Ash", **LONG), client="a")
        with pytest.raises(ClientBusy) as refused:
            engine.submit(GenerationRequest(prefix="Ash", length=2), client="a")
        assert "at most 2" in refused.value.reason and refused.value.retry_after >= 1
        # Others still get in, up to the engine's own limits.
        b = engine.submit(GenerationRequest(prefix="Brock", length=2), client="b")
        assert b.result(timeout=60).tokens == 2
        # A generation that ends (here cancelled) gives its client's place back.
        a1.cancel()
        assert a1.result(timeout=60).finish_reason == "cancelled"
        a3 = engine.submit(GenerationRequest(prefix="Ash", length=2), client="a")
        a2.cancel()
        assert a3.result(timeout=60).tokens == 2
        assert engine.line.per_client() == {}
    finally:
        engine.close(grace=0)


def test_a_refused_submit_gives_the_clients_place_back(tiny_checkpoint):
    engine = started_engine(tiny_checkpoint, slow_turns=True,
                            max_batch=1, max_queue=0, max_per_client=5)
    try:
        holder = engine.submit(GenerationRequest(prefix="Ash", **LONG), client="a")
        for _ in range(10):
            with pytest.raises(Busy):
                engine.submit(GenerationRequest(prefix="Ash", length=2), client="b")
        assert engine.line.per_client() == {"a": 1}
        holder.cancel()
        holder.result(timeout=60)
        assert engine.line.per_client() == {}
    finally:
        engine.close(grace=0)


def test_over_its_share_is_429_full_for_everyone_is_503(tiny_checkpoint):
    engine = started_engine(tiny_checkpoint, slow_turns=True,
                            max_batch=1, max_queue=1, max_per_client=1)
    client = create_app(Config(client_generation_limit=1), engine=engine).test_client()
    try:
        holder = engine.submit(GenerationRequest(prefix="Ash", **LONG), client="127.0.0.1")
        over = client.get("/?prefix=Misty&length=2")  # the test client's address
        assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
        assert "at most 1" in over.get_json()["error"]
        waiting = engine.submit(GenerationRequest(prefix="Brock", **LONG), client="203.0.113.1")
        full = client.get("/?prefix=Misty&length=2", environ_base={"REMOTE_ADDR": "203.0.113.2"})
        assert full.status_code == 503 and "slots are busy" in full.get_json()["error"]
        holder.cancel(), waiting.cancel()
    finally:
        engine.close(grace=0)


def test_a_frozen_loop_with_work_pending_is_stalled(tiny_checkpoint, tmp_path, monkeypatch):
    freeze = tmp_path / "freeze"
    monkeypatch.setenv(faults.FREEZE_FILE_SETTING, str(freeze))
    engine = started_engine(tiny_checkpoint, slow_turns=True, max_batch=1, max_queue=1)
    app = create_app(Config(stall_timeout=1.0), engine=engine)
    client = app.test_client()
    try:
        assert client.get("/readyz").status_code == 200
        frozen = FrozenLoop(str(freeze)).__enter__()
        # No work pending: a quiet loop is not a stall.
        assert engine.stalled_for() == 0 and client.get("/readyz").status_code == 200
        stuck = engine.submit(GenerationRequest(prefix="Ash", length=5))
        time.sleep(1.2)
        assert engine.stalled_for() >= 1.0
        readyz = client.get("/readyz")
        assert readyz.status_code == 503 and readyz.get_json()["state"] == "stalled"
        assert int(readyz.headers["Retry-After"]) >= 1
        refused = client.get("/?prefix=Misty&length=2")
        assert refused.status_code == 503 and "no step" in refused.get_json()["error"]
        # A reader waiting on it gets its deadline, not a hang.
        with pytest.raises(TimeoutError):
            next(iter(stuck.pieces(timeout=0.5)))
        frozen.__exit__()
        assert stuck.result(timeout=60).tokens == 5
        assert engine.stalled_for() == 0 and client.get("/readyz").status_code == 200
    finally:
        if freeze.exists():
            os.remove(freeze)
        engine.close(grace=0)


def test_the_watchdog_ends_the_process_after_a_long_stall():
    from app.watchdog import EXIT_STATUS, start_watchdog

    class Stalled:
        seconds = 0.0

        def stalled_for(self):
            return self.seconds

    engine, exits = Stalled(), []
    exited = threading.Event()
    start_watchdog(engine, restart_after=1.0, interval=0.05,
                   exit=lambda status: (exits.append(status), exited.set()))
    engine.seconds = 0.9
    assert not exited.wait(0.3)
    engine.seconds = 1.0
    assert exited.wait(5) and exits == [EXIT_STATUS]
    assert start_watchdog(engine, restart_after=0) is None  # 0: never
