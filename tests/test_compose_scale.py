"""Replicas for real: CI's compose-up (.ci/docker/compose-up.sh) with APP_REPLICAS=2 runs
`docker-compose up -d --scale app=2`, and nginx (host networking, 127.0.0.1) spreads requests
over both app containers, each reached through its own socket in the shared volume.

- both replicas serve, and nginx lists both sockets;
- a replica whose slots and queue are full answers 503, and nginx tries the other one before the
  client sees it;
- a replica killed (SIGKILL to its uWSGI master, like a crash) under load: only the requests
  that were generating on it fail, each as nginx's JSON 502; every later request is answered
  by the other replica; the restart policy brings the killed one back and it serves again;
- stopping the stack stops the replicas first, so their last answers reach their clients.

Like tests/test_compose.py: Docker is installed and started when missing (as root), the images
are built (layers reused from earlier runs) and the stack is removed at the end.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import requests

from compose_stack import compose, compose_stack, skip_unless_docker_can_run, uwsgi_client
from live_generation import read_events
from pokegen.service_stack import free_port, wait_for

skip_unless_docker_can_run()
pytestmark = pytest.mark.docker

PROJECT = "pokegen-scale-test"
uwsgi = uwsgi_client()  # the images' own uWSGI client
CAP, QUEUE = 3, 4  # each replica's GENERATION_CONCURRENCY and QUEUE_SIZE
LOG_LINE = re.compile(r'"GET (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) .*'
                      r'upstream="(?P<upstreams>[^"]*)" upstream_status="(?P<statuses>[^"]*)"')


@pytest.fixture(scope="module")
def stack(tiny_checkpoint):
    port = free_port()
    settings = dict(
        APP_REPLICAS=2, GENERATION_CONCURRENCY=CAP, QUEUE_SIZE=QUEUE,
        # Every request of this test comes from one address, standing for many users.
        CLIENT_GENERATION_LIMIT=1000, CONNECTION_LIMIT=1000, RATE_LIMIT=1000, RATE_BURST=2000,
        # The plain build: the vector ones write the tiny model's long generations faster
        # than the test can kill a replica in the middle of them.
        POKEGEN_KERNEL="generic",
        READY_TIMEOUT=1800)  # from the start of the script: a cold build included
    with compose_stack(PROJECT, tiny_checkpoint, port, **settings) as env:
        env["URL"] = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: all(healthy(r) for r in replicas(env)), timeout=300), \
            "the app replicas did not both become healthy"
        yield env


def inspect(container_id: str) -> dict:
    return json.loads(subprocess.run(["docker", "inspect", container_id], capture_output=True,
                                     text=True, check=True).stdout)[0]


def replicas(env: dict) -> list:
    return [inspect(cid) for cid in compose(env, "ps", "-q", "app").split()]


def healthy(container: dict) -> bool:
    return container["State"].get("Health", {}).get("Status") == "healthy"


def socket_name(container: dict) -> str:
    """The socket uwsgi.ini binds in the shared volume: named after the container's host name."""
    return f"app-{container['Config']['Hostname']}.sock"


def host_socket(env: dict, container: dict) -> str:
    volume = subprocess.run(["docker", "volume", "inspect", f"{PROJECT}_uwsgi-socket"],
                            capture_output=True, text=True, check=True).stdout
    return os.path.join(json.loads(volume)[0]["Mountpoint"], socket_name(container))


def nginx_log(env: dict) -> list:
    """nginx's access log lines: uri, status, the replica sockets tried and their statuses."""
    (nginx_id,) = compose(env, "ps", "-q", "nginx").split()
    out = subprocess.run(["docker", "logs", nginx_id], capture_output=True, text=True,
                         check=True).stdout
    lines = []
    for match in LOG_LINE.finditer(out):
        lines.append({"uri": match["uri"], "status": int(match["status"]),
                      "upstreams": [u.strip().rsplit("/", 1)[-1]
                                    for u in match["upstreams"].split(",") if u.strip()],
                      "statuses": [s.strip() for s in match["statuses"].split(",") if s.strip()]})
    return lines


def log_of(env: dict, tag: str) -> dict:
    """The access log line of the one request whose prefix was `tag`."""
    found = [line for line in nginx_log(env) if f"prefix={tag}&" in line["uri"]]
    assert len(found) == 1, (tag, found)
    return found[0]


def held(env: dict, container: dict) -> float:
    """Generations in flight plus queued on one replica, from its own /metrics."""
    metrics = uwsgi.response(host_socket(env, container), "/metrics", timeout=10).decode()
    return sum(float(re.search(rf"^{name} (\S+)$", metrics, re.M).group(1))
               for name in ("pokegen_generations_in_flight", "pokegen_queue_depth"))


class Answer:
    """One request through nginx, timed; never raises."""

    def __init__(self, url: str, tag: str, length: int):
        self.tag = tag
        self.started = time.monotonic()
        try:
            reply = requests.get(url + "/", params={"prefix": tag, "length": length,
                                                    "truncate": 0, "seed": 1}, timeout=180)
            self.status = reply.status_code
            self.content_type = reply.headers.get("Content-Type", "")
            self.body = reply.json() if self.content_type.startswith("application/json") else reply.text
        except requests.RequestException as error:
            self.status, self.content_type, self.body = None, "", repr(error)
        self.ended = time.monotonic()


def test_both_replicas_serve_through_their_own_sockets(stack):
    containers = replicas(stack)
    assert len(containers) == 2
    names = sorted(socket_name(c) for c in containers)
    assert names[0] != names[1]
    for container in containers:
        assert os.path.exists(host_socket(stack, container))
        assert container["HostConfig"]["NetworkMode"] == "none"
    (nginx_id,) = compose(stack, "ps", "-q", "nginx").split()
    upstreams = subprocess.run(["docker", "exec", nginx_id, "cat", "/run/nginx/pokegen-upstreams.conf"],
                               capture_output=True, text=True, check=True).stdout
    assert sorted(re.findall(r"app-[^ ;]+\.sock", upstreams)) == names

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: Answer(stack["URL"], f"Both{i}", 48), range(8)))
    assert [a.status for a in answers] == [200] * 8, [a.body for a in answers]
    served = {log_of(stack, a.tag)["upstreams"][-1] for a in answers}
    assert served == set(names)


def test_a_full_replicas_503_is_tried_on_the_other(stack):
    full, other = replicas(stack)
    path = host_socket(stack, full)
    # Every slot and queue place of one replica taken by long generations sent to its socket.
    hogs = []
    for i in range(CAP + QUEUE):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        conn.sendall(uwsgi.uwsgi_packet("/", f"prefix=Hog{i}&length=900&truncate=0&seed=1"))
        hogs.append(conn)
    try:
        assert wait_for(lambda: held(stack, full) == CAP + QUEUE, timeout=60)
        answers = [Answer(stack["URL"], f"Retry{i}", 8) for i in range(6)]
        assert [a.status for a in answers] == [200] * 6, [a.body for a in answers]
        lines = [log_of(stack, a.tag) for a in answers]
        assert all(line["upstreams"][-1] == socket_name(other) for line in lines), lines
        retried = [line for line in lines if line["upstreams"][0] == socket_name(full)]
        # Least connections sees both replicas idle from nginx's side and alternates between them:
        # some requests reach the full one first, get its 503 and go on to the other.
        assert retried, lines
        assert all(line["statuses"] == ["503", "200"] for line in retried), retried
    finally:
        for conn in hogs:
            conn.close()
    assert wait_for(lambda: held(stack, full) == 0, timeout=180)


@pytest.mark.skipif(os.geteuid() != 0, reason="kills a container's process from the host")
def test_a_replica_killed_under_load_costs_only_its_requests_and_rejoins(stack):
    victim, survivor = replicas(stack)
    url = stack["URL"]
    # Four long generations start together: least connections gives each replica two.
    with ThreadPoolExecutor(4) as first_pool:
        first = [first_pool.submit(Answer, url, f"Long{i}", 1000) for i in range(4)]
        assert wait_for(lambda: held(stack, victim) == 2 and held(stack, survivor) == 2, timeout=30)
        time.sleep(1.5)  # past nginx's one-second window for trying another replica
        assert not any(f.done() for f in first), "the long generations ended before the kill"
        killed_at = time.monotonic()
        os.kill(victim["State"]["Pid"], signal.SIGKILL)

        # Steady load meanwhile, and until the killed replica is back and healthy.
        later, stop = [], threading.Event()

        def keep_asking(worker: int) -> None:
            n = 0
            while not stop.is_set():
                later.append(Answer(url, f"After{worker}x{n}", 16))
                n += 1
        with ThreadPoolExecutor(3) as load:
            for worker in range(3):
                load.submit(keep_asking, worker)
            back = wait_for(lambda: (inspect(victim["Id"])["RestartCount"] >= 1
                                     and healthy(inspect(victim["Id"]))), timeout=300, interval=1)
            time.sleep(2)
            stop.set()
        first = [f.result() for f in first]
    assert back, "the killed replica did not come back healthy"

    cut = [a for a in first if a.status != 200]
    assert len(cut) == 2, [(a.tag, a.status, a.body) for a in first]
    for answer in cut:
        assert answer.status == 502
        assert answer.content_type == "application/json"
        assert "not answering" in answer.body["error"]
        assert answer.started < killed_at < answer.ended
        assert log_of(stack, answer.tag)["upstreams"] == [socket_name(victim)]
    for answer in first:
        if answer.status == 200:
            assert log_of(stack, answer.tag)["upstreams"] == [socket_name(survivor)]
    assert later and all(a.status == 200 for a in later), \
        [(a.tag, a.status, a.body) for a in later if a.status != 200]

    # Back in rotation: the same socket name, and requests reach it again.
    with ThreadPoolExecutor(6) as pool:
        rejoined = list(pool.map(lambda i: Answer(url, f"Rejoined{i}", 48), range(6)))
    assert [a.status for a in rejoined] == [200] * 6
    assert socket_name(victim) in {log_of(stack, a.tag)["upstreams"][-1] for a in rejoined}


def finished_at(container_id: str) -> datetime:
    # Docker writes RFC 3339 in UTC with up to nine digits of fraction, trailing zeros dropped.
    stamp = inspect(container_id)["State"]["FinishedAt"]
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(seconds) + timedelta(microseconds=int((fraction + "000000")[:6]))


def test_stopping_the_stack_stops_the_apps_before_nginx(stack):
    """`docker-compose stop` (and `down`) signals the app replicas first: uWSGI finishes the
    generations it holds while nginx still carries their answers, and nginx stops last.
    Runs last in this module: it stops the stack."""
    url = stack["URL"]
    # About three seconds of decoding: still running when the stop starts, done well within
    # uWSGI's mercy (uwsgi.ini), whatever this machine's speed.
    sample = Answer(url, "Calibrate", 100)
    assert sample.status == 200, sample.body
    length = max(100, min(1000, int(100 * 3.0 / (sample.ended - sample.started))))
    in_flight = requests.get(url + "/stream", params={"prefix": "Draining", "length": length,
                                                      "truncate": 0, "seed": 1},
                             stream=True, timeout=180)
    events = read_events(in_flight)
    assert next(events)[0] == "piece"
    stopper = threading.Thread(target=compose, args=(stack, "stop"))
    stopper.start()
    rest = list(events)
    stopper.join(timeout=300)
    assert not stopper.is_alive(), "docker-compose stop did not return"

    event, done = rest[-1]
    assert event == "done" and done["tokens"] == length, rest[-1]
    apps = compose(stack, "ps", "-q", "app").split()
    (nginx,) = compose(stack, "ps", "-q", "nginx").split()
    assert all(not inspect(c)["State"]["Running"] for c in apps + [nginx])
    assert max(finished_at(app) for app in apps) < finished_at(nginx)
