"""Faults injected into the real stack (scripts/serve.sh: nginx + uWSGI +
engine on 127.0.0.1):

- SIGKILL of the uWSGI worker under load: the master respawns it, the
  requests it held get nginx's JSON 502 at once, the new worker loads the
  model and the service answers again (the time it takes is printed).
- SIGTERM of the stack: generations in flight finish, new requests are
  refused at once, both servers stop, the engine is closed.
- A checkpoint that cannot load: the service stays up, /readyz and / answer
  503 with the one-line reason, the worker is not restarted over and over,
  and serve.sh (`make serve`) prints the error. A checkpoint folder that does
  not exist stops serve.sh before anything starts, with one line.
"""
import json
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from live_generation import SLOW_TURNS
from pokegen.service_stack import ServiceStack, short_temp_dir, wait_for

pytestmark = pytest.mark.e2e

# A respawned worker must answer again within this (it loads the tiny model).
RECOVERY_LIMIT = 120.0
DEADLINE = 60.0  # no request may wait longer for its answer


@pytest.fixture(scope="module")
def stack(start_stack):
    # Several clients share 127.0.0.1 here: the per-client limits (tested on their own,
    # test_nginx_fairness.py and test_abuse_e2e.py) are opened up.
    # Slow turns: the generations a test signals or kills in the middle must still be running.
    return start_stack(GENERATION_CONCURRENCY=3, QUEUE_SIZE=16, RATE_LIMIT=1000,
                       RATE_BURST=2000, CONNECTION_LIMIT=1000, CLIENT_GENERATION_LIMIT=1000,
                       **SLOW_TURNS)


class Answer:
    """One request's fate: its status, headers and JSON, or the error raised."""

    def __init__(self, url: str, timeout: float = DEADLINE):
        self.sent = time.monotonic()
        try:
            response = requests.get(url, timeout=timeout)
            self.status, self.headers, self.text = (response.status_code, response.headers,
                                                    response.text)
            self.error = None
        except requests.RequestException as error:
            self.status, self.headers, self.text, self.error = None, {}, "", error
        self.seconds = time.monotonic() - self.sent

    def json(self) -> dict:
        return json.loads(self.text)

    def is_clean_refusal(self) -> bool:
        """A JSON 502 or 503 with Retry-After: what nginx or the app answer
        when the app server is down, loading or full."""
        return (self.status in (502, 503) and self.headers.get("Retry-After", "").isdigit()
                and self.json()["status"] == self.status and bool(self.json()["error"]))

    def __repr__(self):
        return f"<{self.status or self.error} after {self.seconds:.1f} s: {self.text[:100]!r}>"


def keep_asking(url: str, stop: threading.Event) -> list:
    answers = []
    while not stop.is_set():
        answers.append(Answer(url))
        if answers[-1].status != 200:
            time.sleep(0.2)  # as a client told to retry later would, only sooner
    return answers


def held_by_the_engine(stack) -> int:
    """Requests decoding or waiting for a slot, from one scrape of /metrics."""
    text = stack.get("/metrics").text
    return sum(int(float(re.search(rf"^{name} (\S+)$", text, re.M).group(1)))
               for name in ("pokegen_generations_in_flight", "pokegen_queue_depth"))


# ------------------------------------------------------------ SIGKILL

def test_a_killed_worker_is_respawned_and_held_requests_get_a_clean_502(stack):
    old_worker = stack.uwsgi_worker()
    long_episode = stack.url + "/?prefix=Ash&length=1023&truncate=0&seed={}"
    stop = threading.Event()
    with ThreadPoolExecutor(3 + 6) as pool:
        held = [pool.submit(Answer, long_episode.format(i)) for i in range(3)]
        assert wait_for(lambda: stack.metric("pokegen_generations_in_flight") == 3)
        load = [pool.submit(keep_asking, stack.url + f"/?prefix=Brock&length=16&seed={i}", stop)
                for i in range(6)]
        time.sleep(0.5)
        killed_at = time.monotonic()
        old_worker.send_signal(signal.SIGKILL)
        try:
            answered_again = wait_for(
                lambda: Answer(stack.url + "/?prefix=Misty&length=2", timeout=30).status == 200,
                timeout=RECOVERY_LIMIT, interval=0.25)
            recovered_after = time.monotonic() - killed_at
            time.sleep(1.0)  # the clients of the load get their episodes too
        finally:
            stop.set()
        held, load = [f.result() for f in held], [a for f in load for a in f.result()]
    print(f"SIGKILL of the worker: answering again {recovered_after:.1f} s later; held "
          f"requests: {[a.status for a in held]}; the load meanwhile, by status: "
          f"{dict(Counter(a.status for a in load))}")
    assert answered_again, stack.log()
    # The requests the worker held were cut with nginx's JSON 502, at once.
    for answer in held:
        assert answer.status == 502 and answer.is_clean_refusal(), answer
        assert answer.sent + answer.seconds < killed_at + 10, answer
    # Around the kill every client got an answer in time: an episode or a clean refusal.
    assert all(a.status == 200 or a.is_clean_refusal() for a in load), load
    assert all(a.seconds < DEADLINE for a in load)
    assert any(a.status == 200 for a in load)
    new_worker = stack.uwsgi_worker()
    assert new_worker.pid != old_worker.pid and new_worker.is_running()
    log = stack.log(tail=200_000)
    assert log.count("killed by signal 9") == 1 and log.count("Respawned uWSGI worker") == 1
    assert log.count("INFO pokegen.engine: model run1 ready") == 2


# ------------------------------------------------------------ SIGTERM

def test_sigterm_finishes_generations_in_flight_and_stops_cleanly(stack):
    servers = stack.server_processes()
    episode = stack.url + "/?prefix=Misty&length=300&truncate=0&seed={}"
    with ThreadPoolExecutor(5) as pool:
        in_flight = [pool.submit(Answer, episode.format(i)) for i in range(5)]  # 3 run, 2 wait
        assert wait_for(lambda: held_by_the_engine(stack) == 5)
        stopped_at = time.monotonic()
        stack.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        late = Answer(stack.url + "/?prefix=Late&length=2", timeout=30)
        finished = [f.result() for f in in_flight]
    returncode = stack.process.wait(timeout=60)
    stop_took = time.monotonic() - stopped_at
    print(f"SIGTERM: stack stopped in {stop_took:.1f} s; in flight: "
          f"{[a.status for a in finished]}; a request 0.5 s later: {late}")
    # Each generation in flight at the signal ran to its end.
    for answer in finished:
        assert answer.status == 200, answer
        assert answer.json()["text"].startswith("Misty")
    # A request arriving during the shutdown is refused at once, never held.
    assert late.error is not None or late.is_clean_refusal(), late
    assert late.seconds < 15, late
    assert returncode == 143 and stop_took < 30, stack.log()
    assert not [p for p in servers if p.is_running() and p.status() != "zombie"]
    log = stack.log(tail=200_000)
    assert "engine stopped" in log and "Traceback" not in log, log[-3000:]


# ---------------------------------------------- a checkpoint that cannot load

def truncate_weights(run_dir):
    data = next(name for name in os.listdir(run_dir) if ".data-" in name)
    with open(os.path.join(run_dir, data), "r+b") as f:
        f.truncate(1000)


def remove_weights(run_dir):
    for name in os.listdir(run_dir):
        if ".data-" in name or name.endswith(".index"):
            os.remove(os.path.join(run_dir, name))


@pytest.fixture(scope="module", params=[truncate_weights, remove_weights],
                ids=["truncated weights", "missing weights"])
def broken(request, tiny_checkpoint):
    checkpoint_dir = short_temp_dir("pokegen-broken-")
    run_dir = os.path.join(checkpoint_dir, "run1")
    shutil.copytree(os.path.join(tiny_checkpoint, "run1"), run_dir)
    request.param(run_dir)
    service = ServiceStack(CHECKPOINT_DIR=checkpoint_dir).start(until="failed")
    yield service
    assert service.stop() in (0, 143), service.log()


def test_readyz_stays_503_with_the_one_line_reason(broken):
    reasons = []
    for _ in range(4):
        readyz = broken.get("/readyz")
        assert readyz.status_code == 503
        body = readyz.json()
        assert body["state"] == "failed" and body["status"] == 503
        reasons.append(body["error"])
        time.sleep(1)
    assert len(set(reasons)) == 1
    reason = reasons[0]
    assert reason.startswith("the model failed to load: ") and "run1" in reason
    assert "\n" not in reason and "Traceback" not in reason
    assert broken.get("/healthz").status_code == 200  # alive, just not ready


def test_generation_answers_503_with_that_reason(broken):
    reason = broken.get("/readyz").json()["error"]
    for path in ("/?prefix=Ash", "/stream?prefix=Ash", "/?callback=cb"):
        answer = broken.get(path)
        assert answer.status_code == 503, path
        assert answer.json() == {"error": reason, "status": 503}
    assert broken.get("/info").json()["state"] == "failed"


def test_the_worker_is_not_restarted_over_and_over(broken):
    worker = broken.uwsgi_worker()
    time.sleep(3)
    assert broken.uwsgi_worker().pid == worker.pid
    log = broken.log(tail=200_000)
    assert log.count("ERROR pokegen.engine: model failed to load:") == 1, log
    assert "Respawned" not in log and "DAMN" not in log


def test_serve_prints_the_error_and_keeps_answering(broken):
    reason = broken.get("/readyz").json()["error"]
    # serve.sh looks at /readyz twice a second.
    assert wait_for(lambda: "pokegen is up but cannot generate" in broken.log(), timeout=10)
    lines = broken.log(tail=200_000).splitlines()
    assert f"error: {reason}" in lines
    assert broken.process.poll() is None  # still up, answering the reason


def test_a_missing_checkpoint_folder_stops_serve_before_anything_starts():
    nowhere = os.path.join(short_temp_dir("pokegen-empty-"), "models")
    service = ServiceStack(CHECKPOINT_DIR=nowhere)
    with pytest.raises(RuntimeError, match="serve.sh exited with 1"):
        service.start(timeout=60)
    output = service.log().strip().splitlines()
    assert output == [f"error: no checkpoint in {nowhere}/run1 (train one with train.py)"]
