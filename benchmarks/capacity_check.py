"""Checks benchmarks/capacity_model.py against the real service on this machine.

1. Starts the stack as `make serve` does (scripts/serve.sh: nginx -> uWSGI -> engine, the
   production defaults GENERATION_CONCURRENCY=3, QUEUE_SIZE=16, QUEUE_TIMEOUT=30) on the
   GPT-2-small-shaped random checkpoint of benchmarks/service_speed.py.
2. At each load level: measures one replica's speed, the latency of an episode (256 tokens)
   with 1, 2 and 3 decoded together (whole rounds through nginx's GET /), right before the load,
   so that a machine shared with other work is measured as it is during the load; writes the
   last one to --rates-json for the model.
3. Sends Poisson arrivals at that level (a share of the capacity the model derives from step 2)
   for --seconds, and compares what the service did with what the model predicts for the same
   arrivals: the share of 503s and the p50/p95 latency of answered requests. The model is run
   for many arrival sequences of the same length, so its 5-95% band shows how much a run this
   short varies by chance alone.

    python benchmarks/capacity_check.py
    python benchmarks/capacity_check.py --levels 0.5,1.3 --seconds 240 --length 128
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.capacity_model import ReplicaSpeed, Settings, simulate
from benchmarks.service_speed import (DEFAULT_CHECKPOINT_DIR, RUN_NAME, cpu_model, ensure_checkpoint,
                           log, write_json)
from benchmarks.speed_client import json_episode, percentiles, run_round

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SETTINGS = Settings(replicas=1, slots=3, queue=16, queue_timeout=30.0)
LENGTH = 256


def start_stack(checkpoint_dir: str):
    from pokegen.service_stack import ServiceStack

    settings = dict(CHECKPOINT_DIR=os.path.abspath(checkpoint_dir), RUN_NAME=RUN_NAME,
                    GENERATION_CONCURRENCY=SETTINGS.slots, QUEUE_SIZE=SETTINGS.queue,
                    QUEUE_TIMEOUT=SETTINGS.queue_timeout,
                    # One client address stands for every user here.
                    RATE_LIMIT=1000, RATE_BURST=2000, CONNECTION_LIMIT=1000,
                    CLIENT_GENERATION_LIMIT=1000)
    log("starting the stack (scripts/serve.sh): " + " ".join(f"{k}={v}" for k, v in settings.items()))
    return ServiceStack(**settings).start(timeout=600)


def measure_speed(url: str, rounds: int, length: int) -> ReplicaSpeed:
    json_episode(url, length, seed=0)  # warm the path once
    latency, seed = {}, 1
    for k in range(1, SETTINGS.slots + 1):
        measured = run_round(url, concurrency=k, requests_count=k * rounds, length=length,
                             first_seed=seed, episode=json_episode)
        seed += k * rounds
        if measured.failed:
            raise RuntimeError(f"{len(measured.failed)} requests failed at {k} together: "
                               f"{measured.failed[0].error}")
        latency[k] = measured.latency()["p50"]
        log(f"{k} together: p50 {latency[k]:.2f} s per episode "
            f"({len(measured.short)} of {len(measured.episodes)} ended early)")
    return ReplicaSpeed(latency)


def poisson_run(url: str, rate_per_minute: float, seconds: float, seed: int, length: int) -> dict:
    """Open-loop arrivals: each request is sent at its time whatever the others are doing."""
    rng = random.Random(seed)
    results, lock = [], threading.Lock()

    def one(index: int) -> None:
        episode = json_episode(url, length, seed=10_000 + index, timeout=600)
        with lock:
            results.append(episode)

    started = time.monotonic()
    at, index = rng.expovariate(rate_per_minute / 60), 0
    with ThreadPoolExecutor(max_workers=64) as pool:
        while at < seconds:
            time.sleep(max(0.0, started + at - time.monotonic()))
            pool.submit(one, index)
            index += 1
            at += rng.expovariate(rate_per_minute / 60)
    if not results:
        raise RuntimeError(f"no arrival within {seconds:g} s at {rate_per_minute:.2f}/minute: "
                           f"raise --seconds")
    refused = [e for e in results if e.error and e.error.startswith("HTTP 503")]
    other_errors = [e for e in results if e.error and not e.error.startswith("HTTP 503")]
    answered = [e.seconds for e in results if not e.error]
    figures = percentiles(answered)
    return {"arrivals": len(results), "share_503": len(refused) / len(results),
            "other_errors": len(other_errors),
            "first_other_error": other_errors[0].error if other_errors else None,
            "p50": figures["p50"], "p95": figures["p95"]}


def modelled(rate_per_minute: float, seconds: float, speed: ReplicaSpeed, runs: int) -> dict:
    """The model for arrival sequences as long as the real run's, started empty as it was."""
    arrivals = max(1, round(rate_per_minute * seconds / 60))
    outcomes = [simulate(rate_per_minute, speed, SETTINGS, arrivals=arrivals, warmup=0.0, seed=s)
                for s in range(runs)]

    def band(values):
        values = sorted(v for v in values if v == v)
        return {"median": statistics.median(values), "p5": values[int(0.05 * (len(values) - 1))],
                "p95": values[int(0.95 * (len(values) - 1))]}
    return {"share_503": band(o.share_503 for o in outcomes),
            "p50": band(o.percentile(0.5) for o in outcomes),
            "p95": band(o.percentile(0.95) for o in outcomes)}


def speed_warnings(measured: list) -> list:
    """Signs that the machine's speed changed under the run (other work on a shared machine),
    which makes the comparison meaningless: a batch decoding faster per episode than a single
    episode, or a capacity that moved by more than a quarter between the levels."""
    warnings = []
    for speed, _capacity in measured:
        alone, together = speed.latency[1], speed.latency[max(speed.latency)]
        if together < alone * 0.9:
            warnings.append(f"{max(speed.latency)} together took {together:.2f} s an episode, "
                            f"alone {alone:.2f} s: the machine's speed changed while measuring")
    capacities = [capacity for _speed, capacity in measured]
    if max(capacities) > 1.25 * min(capacities):
        warnings.append(f"capacity moved from {min(capacities):.1f} to {max(capacities):.1f} "
                        f"episodes/minute between levels: the machine is not steady")
    return warnings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR,
                        help=f"folder holding {RUN_NAME} (built once: {DEFAULT_CHECKPOINT_DIR})")
    parser.add_argument("--levels", default="0.6,1.2",
                        help="arrival rates as shares of one replica's modelled capacity (0.6,1.2)")
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="seconds of arrivals at each level (180)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per batch size when measuring the speed (3)")
    parser.add_argument("--length", type=int, default=LENGTH,
                        help=f"tokens per episode ({LENGTH}); shorter ones give more arrivals "
                             f"in the same time on a slow or busy machine")
    parser.add_argument("--model-runs", type=int, default=200,
                        help="arrival sequences the model is run for at each level (200)")
    parser.add_argument("--rates-json", default=os.path.join("build", "capacity", "rates.json"),
                        help="where the measured speed goes (build/capacity/rates.json)")
    args = parser.parse_args(argv)
    try:
        levels = [float(x) for x in args.levels.split(",")]
    except ValueError:
        parser.error(f"--levels must be numbers separated by commas, got {args.levels!r}")
    if not levels or min(levels) <= 0 or args.seconds <= 0 or args.rounds < 1 or \
            not 1 <= args.length <= 1000:
        parser.error("--levels must be above 0, --seconds above 0, --rounds at least 1, "
                     "--length from 1 to 1000")

    load_start = os.getloadavg()
    ensure_checkpoint(args.checkpoint_dir, "gpt2-small")
    stack = start_stack(args.checkpoint_dir)
    rows = []
    try:
        for number, level in enumerate(levels):
            speed = measure_speed(stack.url, args.rounds, args.length)
            write_json(args.rates_json, {"latency": speed.latency, "length": args.length,
                                         "cpu": cpu_model(), "cores": os.cpu_count()})
            capacity = SETTINGS.slots / speed.seconds(SETTINGS.slots) * 60
            rate = level * capacity
            log(f"Poisson arrivals at {rate:.1f} episodes/minute ({level:.0%} of capacity) "
                f"for {args.seconds:g} s")
            real = poisson_run(stack.url, rate, args.seconds, number, args.length)
            rows.append((level, rate, speed, capacity, real,
                         modelled(rate, args.seconds, speed, args.model_runs)))
    finally:
        stack.stop()

    print(f"machine: {os.cpu_count()} cores ({cpu_model()}); load average at start "
          f"{' '.join(f'{x:.2f}' for x in load_start)}, at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"one replica, GENERATION_CONCURRENCY={SETTINGS.slots}, QUEUE_SIZE={SETTINGS.queue}, "
          f"QUEUE_TIMEOUT={SETTINGS.queue_timeout:g} s; {args.length}-token episodes through nginx")
    for level, _rate, speed, capacity, _real, _model in rows:
        print(f"before {level:.0%}: latency per episode " + ", ".join(
            f"{k} together {s:.2f} s" for k, s in sorted(speed.latency.items()))
            + f" -> capacity {capacity:.1f} episodes/minute")
    print(f"{'load':>5} {'rate/min':>8} {'arrivals':>8} | {'503s real':>9} {'model (5-95%)':>22} | "
          f"{'p50 real':>8} {'model':>14} | {'p95 real':>8} {'model (5-95%)':>20}")
    for level, rate, _speed, _capacity, real, model in rows:
        s, p50, p95 = model["share_503"], model["p50"], model["p95"]
        print(f"{level:>5.0%} {rate:>8.1f} {real['arrivals']:>8} | {real['share_503']:>9.1%} "
              f"{s['median']:>7.1%} ({s['p5']:.1%}-{s['p95']:.1%}) | "
              f"{real['p50']:>7.2f}s {p50['median']:>6.2f}s        | "
              f"{real['p95']:>7.2f}s {p95['median']:>6.2f}s ({p95['p5']:.1f}-{p95['p95']:.1f})")
        if real["other_errors"]:
            print(f"      {real['other_errors']} other errors, first: {real['first_other_error']}")
        print(f"      difference (real - model median): 503s {real['share_503'] - s['median']:+.1%}, "
              f"p50 {(real['p50'] / p50['median'] - 1):+.0%}, p95 {(real['p95'] / p95['median'] - 1):+.0%}")
    for warning in speed_warnings([(speed, capacity) for _l, _r, speed, capacity, _x, _m in rows]):
        print(f"WARNING: {warning}")
    print(f"rerun: .venv/bin/python benchmarks/capacity_check.py --levels {args.levels} "
          f"--seconds {args.seconds:g} --length {args.length} --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
