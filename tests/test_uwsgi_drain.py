"""deploy/uwsgi_drain.py, the app container's preStop hook in Kubernetes, against the real
service (scripts/serve.sh on a tiny model): it returns only once the replica holds no request."""
import os
import subprocess
import sys
import threading
import time

import pytest

from pokegen.service_stack import ROOT, wait_for

pytestmark = pytest.mark.e2e

DRAIN = os.path.join(ROOT, "deploy", "uwsgi_drain.py")


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack()


def drain(stack, settle: float = 0.0) -> subprocess.CompletedProcess:
    socket_path = os.path.join(stack.run_dir, "uwsgi.sock")
    return subprocess.run([sys.executable, DRAIN, socket_path, "--settle", str(settle),
                           "--interval", "0.2"], capture_output=True, text=True, timeout=300)


def test_an_idle_replica_is_drained_at_once(stack):
    started = time.monotonic()
    done = drain(stack)
    assert done.returncode == 0 and "no request held" in done.stdout
    assert time.monotonic() - started < 5


def test_drain_waits_for_the_generation_in_flight(stack):
    finished = {}

    def long_episode():
        answer = stack.get("/?prefix=Ash&length=300&truncate=0&seed=3", timeout=300)
        finished["status"], finished["at"] = answer.status_code, time.monotonic()

    client = threading.Thread(target=long_episode)
    client.start()
    assert wait_for(lambda: stack.metric("pokegen_generations_in_flight") >= 1, timeout=30)
    done = drain(stack)
    drained_at = time.monotonic()
    client.join()
    assert done.returncode == 0 and "no request held" in done.stdout
    assert finished["status"] == 200 and finished["at"] <= drained_at


def test_a_replica_without_socket_stops_at_once(tmp_path):
    done = subprocess.run([sys.executable, DRAIN, str(tmp_path / "none.sock"), "--settle", "0"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "stopping now" in done.stdout
