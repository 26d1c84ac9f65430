"""benchmarks/capacity_model.py against queueing results known in closed form, and its CLI."""
import json
import os
import statistics
import subprocess
import sys

import pytest

from benchmarks.capacity_model import ReplicaSpeed, Settings, simulate
from pokegen.service_stack import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "capacity_model.py")


def test_one_slot_matches_the_pollaczek_khinchine_mean_wait():
    # M/D/1: Poisson arrivals, a fixed 2 s per episode, one at a time, a queue that never fills.
    service, rate = 2.0, 0.35  # episodes a second: 70% busy
    outcome = simulate(rate * 60, ReplicaSpeed({1: service}),
                       Settings(replicas=1, slots=1, queue=10_000, queue_timeout=1e9),
                       arrivals=60_000, seed=3)
    rho = rate * service
    expected = service + rate * service ** 2 / (2 * (1 - rho))
    assert outcome.refused == 0
    assert statistics.fmean(outcome.latencies) == pytest.approx(expected, rel=0.05)
    assert outcome.busy == pytest.approx(rho, rel=0.03)  # the server is busy rho of the time


def test_overload_refuses_what_the_replicas_cannot_serve():
    speed = ReplicaSpeed({1: 2.0, 2: 3.0, 3: 4.0})  # 3 together: 45 episodes a minute
    outcome = simulate(90, speed, Settings(replicas=1, slots=3, queue=4, queue_timeout=30),
                       arrivals=20_000)
    assert outcome.share_503 == pytest.approx(0.5, abs=0.03)
    two = simulate(90, speed, Settings(replicas=2, slots=3, queue=4, queue_timeout=30),
                   arrivals=20_000)
    assert two.share_503 < 0.05


def test_batching_speed_is_interpolated_between_measured_sizes():
    speed = ReplicaSpeed({1: 3.0, 3: 5.0, 8: 7.5})
    assert speed.seconds(2) == pytest.approx(4.0)
    assert speed.seconds(10) == pytest.approx(8.5)  # along the last two beyond them
    assert speed.episodes_per_second(3) == pytest.approx(0.6)


def test_the_plan_names_the_replicas_needed(tmp_path):
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"latency": {"1": 3.22, "3": 4.89}}), encoding="utf-8")
    done = subprocess.run([sys.executable, SCRIPT, "--rate", "60", "--p95", "10", "--arrivals",
                           "4000", "--rates", str(rates)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "36.8 episodes/minute at most" in done.stdout  # 3 every 4.89 s
    assert "replicas needed: 3" in done.stdout  # 60/min over 36.8/min a replica, load <= 80%


def test_an_unreadable_rates_file_is_one_line(tmp_path):
    bad = tmp_path / "rates.json"
    bad.write_text("{not json", encoding="utf-8")
    done = subprocess.run([sys.executable, SCRIPT, "--rate", "10", "--rates", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot read --rates") and done.stderr.count("\n") == 1
