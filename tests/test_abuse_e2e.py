"""The real stack (scripts/serve.sh: nginx + uWSGI + engine on 127.0.0.1)
under abuse: no generation for nobody, no costly work before "busy", each
client its share, and a wedged engine that turns red and is restarted.

Tokens are counted by the engine itself (pokegen_engine_tokens_generated, in
/metrics), with seeded requests that stop only on length; the decoding loop
is frozen on demand through the fault-injection file of app/engine/faults.py.
Clients behind the trusted proxy (this test, at 127.0.0.1) are told apart by
X-Forwarded-For, with documentation addresses (RFC 5737).
"""
import json
import os
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import requests

from live_generation import SLOW_TURNS, FrozenLoop, read_events
from pokegen.service_stack import ServiceStack, short_temp_dir, wait_for

pytestmark = pytest.mark.e2e

TOKENS = "pokegen_engine_tokens_generated"
IN_FLIGHT = "pokegen_generations_in_flight"
# Seeded, stops only on length: luck cannot end it early.
LONG = "prefix=Ash&length=400&seed={seed}&truncate=0"
# A request that holds the only slot while the loop is being frozen.
HOLD = "prefix=Ash&length=1000&seed={seed}&truncate=0"


def client(n: int) -> dict:
    return {"X-Forwarded-For": f"203.0.113.{n}"}


@pytest.fixture(scope="module")
def freeze_file():
    return os.path.join(short_temp_dir("pokegen-freeze-"), "freeze")


@pytest.fixture(scope="module")
def stack(start_stack, freeze_file):
    return start_stack(GENERATION_CONCURRENCY=1, QUEUE_SIZE=1, QUEUE_TIMEOUT=120,
                       CLIENT_GENERATION_LIMIT=1, TRUSTED_PROXIES="127.0.0.1",
                       # One token a step, so that tokens count steps.
                       SPECULATIVE_TOKENS=0,
                       RATE_LIMIT=1000, RATE_BURST=2000, CONNECTION_LIMIT=100,
                       POKEGEN_FAULT_FREEZE_FILE=freeze_file, **SLOW_TURNS)


def idle(stack) -> bool:
    return stack.metric(IN_FLIGHT) == 0 and stack.metric("pokegen_queue_depth") == 0


def runs_to_its_length(stack, seed: int) -> bool:
    """The seeded request, read to the end, writes all its tokens: only a
    cancel can end it early."""
    done = stack.get("/?" + LONG.format(seed=seed), headers=client(99), timeout=600).json()
    return done["tokens"] == 400


# ------------------------------------------------------ generations for nobody

def test_head_stream_cancels_its_generation(stack):
    assert runs_to_its_length(stack, seed=1) and idle(stack)
    before = stack.metric(TOKENS)
    head = requests.head(stack.url + "/stream?" + LONG.format(seed=1), timeout=60)
    answered = stack.metric(TOKENS)
    assert head.status_code == 200 and head.headers["Content-Type"].startswith("text/event")
    assert wait_for(lambda: idle(stack), timeout=30)
    generated = stack.metric(TOKENS) - before
    print(f"HEAD /stream asked for 400 tokens: {generated:.0f} generated "
          f"({answered - before:.0f} when the answer arrived)")
    # The first piece (one token), then the steps while the answer went out.
    assert generated <= answered - before + 2, (generated, answered - before)
    assert generated < 40


def test_a_client_leaving_get_is_cancelled_within_a_step(stack, freeze_file):
    assert runs_to_its_length(stack, seed=2) and idle(stack)
    before = stack.metric(TOKENS)
    conn = socket.create_connection(("127.0.0.1", stack.port))
    conn.sendall(f"GET /?{LONG.format(seed=2)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert wait_for(lambda: stack.metric(TOKENS) > before + 3, timeout=30)
    with FrozenLoop(freeze_file):
        at_close = stack.metric(TOKENS)
        conn.close()
        time.sleep(2.0)  # nginx drops its upstream connection; the app notices
    assert at_close - before < 400  # it was still generating when the client left
    assert wait_for(lambda: idle(stack), timeout=30)
    after = stack.metric(TOKENS)
    print(f"GET / of 400 tokens, client gone after {at_close - before:.0f}: "
          f"{after - at_close:.0f} more generated")
    assert after - at_close <= 2


# Every other way to ask for a generation, each seeded so that only its length ends it.
BODIES = {
    "POST /": ("/", {"prefix": "Ash", "length": 400, "seed": 2, "truncate": False}),
    "POST /stream": ("/stream", {"prefix": "Ash", "length": 400, "seed": 2, "truncate": False}),
    "POST /v1/completions": ("/v1/completions", {"prompt": "Ash", "max_tokens": 400, "seed": 3,
                                                 "stream": False}),
    "POST /v1/completions stream": ("/v1/completions", {"prompt": "Ash", "max_tokens": 400,
                                                        "seed": 3, "stream": True}),
}


@pytest.mark.parametrize("route", list(BODIES))
def test_a_client_leaving_a_post_is_cancelled_within_a_step(stack, freeze_file, route):
    path, body = BODIES[route]
    if path.startswith("/v1/"):
        body = {**body, "model": requests.get(stack.url + "/v1/models",
                                              timeout=30).json()["data"][0]["id"]}
    # Read to the end, the same request writes all its tokens: only a cancel can end it early.
    if path.startswith("/v1/"):
        whole = requests.post(stack.url + path, json={**body, "stream": False},
                              headers=client(99), timeout=600).json()["usage"]["completion_tokens"]
    else:
        whole = requests.post(stack.url + "/", json=body, headers=client(99),
                              timeout=600).json()["tokens"]
    assert whole == 400
    assert wait_for(lambda: idle(stack), timeout=30)
    before = stack.metric(TOKENS)
    data = json.dumps(body).encode()
    conn = socket.create_connection(("127.0.0.1", stack.port))
    conn.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    assert wait_for(lambda: stack.metric(TOKENS) > before + 3, timeout=30)
    with FrozenLoop(freeze_file):
        at_close = stack.metric(TOKENS)
        conn.close()
        time.sleep(2.0)  # nginx drops its upstream connection; the app notices
    assert at_close - before < 400  # it was still generating when the client left
    assert wait_for(lambda: idle(stack), timeout=30)
    after = stack.metric(TOKENS)
    print(f"{route} of 400 tokens, client gone after {at_close - before:.0f}: "
          f"{after - at_close:.0f} more generated")
    # A stream notices when its next piece cannot be written: one more step.
    assert after - at_close <= 2


def test_a_client_leaving_while_queued_never_gets_a_token(stack, freeze_file):
    assert idle(stack)
    before = stack.metric(TOKENS)
    holder = requests.get(stack.url + "/stream?" + HOLD.format(seed=3), headers=client(1),
                          stream=True, timeout=600)
    events = read_events(holder)
    assert next(events)[0] == "piece"
    with FrozenLoop(freeze_file):  # the holder keeps the only slot meanwhile
        conn = socket.create_connection(("127.0.0.1", stack.port))
        conn.sendall(f"GET /?{LONG.format(seed=4)} HTTP/1.1\r\nHost: x\r\n"
                     f"X-Forwarded-For: 203.0.113.2\r\n\r\n".encode())
        assert wait_for(lambda: stack.metric("pokegen_queue_depth") == 1, timeout=30)
        conn.close()
        time.sleep(2.0)  # nginx drops its upstream connection; the app notices
    event, done = list(events)[-1]
    assert event == "done" and done["tokens"] == 1000
    assert wait_for(lambda: idle(stack), timeout=60)
    # Every token went to the holder: the slot it freed went to nobody.
    assert stack.metric(TOKENS) - before == 1000


# ------------------------------------------------------------------ fairness

def test_one_client_over_its_share_gets_429_others_still_get_in(stack, freeze_file):
    holder = requests.get(stack.url + "/stream?" + HOLD.format(seed=5), headers=client(3),
                          stream=True, timeout=120)
    assert next(read_events(holder))[0] == "piece"
    with FrozenLoop(freeze_file):  # the holder keeps its slot while we look
        again = requests.get(stack.url + "/?prefix=Misty&length=2", headers=client(3),
                             timeout=30)
        assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 1
        assert "at most 1" in again.json()["error"] and again.json()["status"] == 429
        # Another client is not refused: it waits for the slot.
        other = threading.Thread(target=requests.get,
                                 args=(stack.url + "/?prefix=Brock&length=2",),
                                 kwargs={"headers": client(4), "timeout": 120})
        other.start()
        assert wait_for(lambda: stack.metric("pokegen_queue_depth") == 1, timeout=30)
    holder.close()
    other.join(timeout=120)
    assert wait_for(lambda: idle(stack), timeout=30)


def long_distinct_prefix(rng) -> str:
    return "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(1000))


def test_a_flood_of_long_prefixes_is_refused_before_tokenizing(stack, freeze_file):
    """The engine is full (one decoding, one waiting, the loop held still);
    six clients flood it with 1000-character prefixes of distinct CJK characters."""
    holder = requests.get(stack.url + "/stream?" + HOLD.format(seed=6), headers=client(5),
                          stream=True, timeout=120)
    assert next(read_events(holder))[0] == "piece"
    frozen = FrozenLoop(freeze_file).__enter__()
    if stack.metric(IN_FLIGHT) != 1:
        frozen.__exit__()
        raise AssertionError("the holder ended before the loop was held")
    waiter = threading.Thread(target=requests.get,
                              args=(stack.url + "/?" + LONG.format(seed=7),),
                              kwargs={"headers": client(6), "timeout": 120})
    waiter.start()
    if not wait_for(lambda: stack.metric("pokegen_queue_depth") == 1, timeout=30):
        frozen.__exit__()
        raise AssertionError("the second request did not wait for the slot")
    cache_before = stack.metric("pokegen_tokenizer_cache_bytes")
    probes, stop = [], threading.Event()

    def flood(n):
        rng, answers = random.Random(n), []
        for _ in range(15):
            path = ("/", "/stream")[len(answers) % 2]
            answers.append(requests.get(f"{stack.url}{path}?length=5&prefix="
                                        f"{quote(long_distinct_prefix(rng))}",
                                        headers=client(10 + n), timeout=60))
        return answers

    def probe():
        while not stop.is_set():
            started = time.monotonic()
            probes.append((stack.get("/healthz", timeout=30).status_code,
                           time.monotonic() - started))

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = [a for batch in pool.map(flood, range(6)) for a in batch]
    finally:
        stop.set()
        prober.join()
        frozen.__exit__()
        holder.close()
        waiter.join(timeout=120)
    healthz = sorted(seconds for _, seconds in probes)
    print(f"flood: {len(answers)} long prefixes, statuses "
          f"{sorted({a.status_code for a in answers})}; /healthz p95 "
          f"{healthz[int(0.95 * (len(healthz) - 1))] * 1000:.0f} ms over {len(healthz)} probes")
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) >= 1 and "busy" in answer.json()["error"]
    assert {status for status, _ in probes} == {200}
    # Nothing was tokenized: the word cache did not change.
    assert stack.metric("pokegen_tokenizer_cache_bytes") == cache_before


# ------------------------------------------------------------------- a wedge

@pytest.fixture
def wedge_stack():
    freeze = os.path.join(short_temp_dir("pokegen-wedge-"), "freeze")
    service = ServiceStack(GENERATION_CONCURRENCY=2, QUEUE_SIZE=2, REQUEST_TIMEOUT=5,
                           STALL_TIMEOUT=2, STALL_RESTART_AFTER=8, RATE_LIMIT=1000,
                           RATE_BURST=2000, POKEGEN_FAULT_FREEZE_FILE=freeze).start()
    service.freeze_file = freeze
    yield service
    if os.path.exists(freeze):
        os.remove(freeze)
    assert service.stop() in (0, 143), service.log()


def test_a_wedged_engine_turns_red_and_the_worker_is_restarted(wedge_stack):
    stack = wedge_stack
    old_worker = stack.uwsgi_worker()
    assert stack.get("/readyz").status_code == 200
    frozen = FrozenLoop(stack.freeze_file).__enter__()
    frozen_at = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(stack.get, "/?prefix=Ash&length=5", timeout=60)
        assert wait_for(lambda: stack.get("/readyz").status_code == 503, timeout=10)
        red_after = time.monotonic() - frozen_at
        readyz = stack.get("/readyz")
        assert readyz.json()["state"] == "stalled" and readyz.headers["Retry-After"]
        refused = stack.get("/?prefix=Misty&length=2")
        assert refused.status_code == 503 and "no step" in refused.json()["error"]
        assert stack.get("/stream?prefix=Misty&length=2").status_code == 503
        assert stack.get("/healthz").status_code == 200  # alive, not ready
        # The request held by the wedge ends at its deadline.
        stuck = stuck.result()
    assert stuck.status_code == 504 and stuck.json()["status"] == 504
    # The watchdog ends the worker; uWSGI's master starts a new one.
    assert wait_for(lambda: not old_worker.is_running() or old_worker.status() == "zombie",
                    timeout=30), stack.log()
    restarted_after = time.monotonic() - frozen_at
    frozen.__exit__()
    assert wait_for(lambda: stack.get("/readyz").status_code == 200, timeout=120,
                    interval=0.5), stack.log()
    recovered_after = time.monotonic() - frozen_at
    assert stack.get("/?prefix=Brock&length=5").status_code == 200
    assert stack.uwsgi_worker().pid != old_worker.pid
    print(f"wedge: /readyz red after {red_after:.1f} s, worker ended after "
          f"{restarted_after:.1f} s, ready again after {recovered_after:.1f} s")
    log = stack.log(tail=200_000)
    assert "ending the process" in log and "Respawned uWSGI worker" in log, log[-3000:]
