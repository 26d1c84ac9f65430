"""A capacity model of pokegen: Poisson arrivals against replicas whose speed was measured.

Each replica decodes up to GENERATION_CONCURRENCY episodes together; with k of them in the
batch, every one advances at 1 / latency(k) of an episode a second, latency(k) being the
measured time of one 256-token episode decoded alongside k - 1 others (the batch is refilled
at every step, so this is processor sharing at a rate that depends on k). Beyond the slots a
replica queues QUEUE_SIZE requests for at most QUEUE_TIMEOUT seconds, then answers 503. nginx
sends each request to the replica holding the fewest and tries a full replica's 503 on the
others, so a request is refused at once only when every replica is full. The model simulates
that, event by event, and reports the share of 503s, the latency percentiles and how much of the
time a replica decodes at all (its CPU is busy then: a batch of one keeps the cores busy too).

    python benchmarks/capacity_model.py --rate 100 --p95 10            # episodes/minute, seconds
    python benchmarks/capacity_model.py --rate 1000 --p95 10 --rates build/capacity/rates.json

Without --rates it uses the 256-token latencies of docs/benchmarks.md's latest service run.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import deque
from dataclasses import dataclass

# docs/benchmarks.md, "Latest run": p50 latency of a 256-token episode at 1, 3, 8 and 16 decoded
# together (AMD EPYC, 2 cores, bfloat16 weights). Measure your own with capacity_check.py.
DOCUMENTED_LATENCY = {1: 1.27, 3: 1.82, 8: 4.04, 16: 7.60}


@dataclass(frozen=True)
class ReplicaSpeed:
    """Seconds for one 256-token episode when k are decoded together, for measured k."""
    latency: dict

    def seconds(self, k: int) -> float:
        """Linear between measured batch sizes, and along the last two beyond them."""
        points = sorted(self.latency.items())
        if k in self.latency:
            return self.latency[k]
        if len(points) == 1:
            return points[0][1] * k  # nothing known about batching: no gain from it
        for (k0, s0), (k1, s1) in zip(points, points[1:]):
            if k < k1:
                break
        return s0 + (s1 - s0) * (k - k0) / (k1 - k0)

    def episodes_per_second(self, k: int) -> float:
        return k / self.seconds(k)

    @classmethod
    def from_json(cls, path: str) -> "ReplicaSpeed":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls({int(k): float(v) for k, v in data["latency"].items()})


@dataclass(frozen=True)
class Settings:
    replicas: int = 1
    slots: int = 3          # GENERATION_CONCURRENCY
    queue: int = 16         # QUEUE_SIZE
    queue_timeout: float = 30.0


@dataclass
class Outcome:
    arrivals: int
    refused: int            # 503s: every replica full at arrival, or the queue wait ran out
    latencies: list         # seconds, answered requests only
    busy: float = 0.0       # share of the time an average replica was decoding (its CPU busy)

    @property
    def share_503(self) -> float:
        return self.refused / self.arrivals if self.arrivals else 0.0

    def percentile(self, fraction: float) -> float:
        values = sorted(self.latencies)
        if not values:
            return math.nan
        return values[max(0, math.ceil(fraction * len(values)) - 1)]


class _Replica:
    def __init__(self):
        self.active = []        # [remaining share of the episode, arrival time, index]
        self.waiting = deque()  # (arrival time, index)
        self.advanced_at = 0.0

    def held(self) -> int:
        return len(self.active) + len(self.waiting)


def simulate(rate_per_minute: float, speed: ReplicaSpeed, settings: Settings, *,
             arrivals: int = 20000, warmup: float = 0.1, seed: int = 1) -> Outcome:
    """Poisson arrivals at rate_per_minute; the first `warmup` share of them is not counted."""
    rng = random.Random(seed)
    rate = rate_per_minute / 60.0
    replicas = [_Replica() for _ in range(settings.replicas)]
    counted_from = int(arrivals * warmup)
    outcome = Outcome(0, 0, [])
    next_arrival, arrived, turn = rng.expovariate(rate), 0, 0
    now = 0.0

    busy_seconds = 0.0

    def advance(replica, until):
        nonlocal busy_seconds
        k = len(replica.active)
        if k:
            busy_seconds += until - replica.advanced_at
            done = (until - replica.advanced_at) / speed.seconds(k)
            for job in replica.active:
                job[0] -= done
        replica.advanced_at = until

    def next_event(replica):
        """(time, kind) of the replica's next completion or queue time-out."""
        times = []
        if replica.active:
            k = len(replica.active)
            times.append((replica.advanced_at + min(j[0] for j in replica.active)
                          * speed.seconds(k), "done"))
        if replica.waiting:
            times.append((replica.waiting[0][0] + settings.queue_timeout, "timeout"))
        return min(times) if times else (math.inf, None)

    def record(arrival_index, latency=None):
        if arrival_index < counted_from:
            return
        outcome.arrivals += 1
        if latency is None:
            outcome.refused += 1
        else:
            outcome.latencies.append(latency)

    while arrived < arrivals or any(r.held() for r in replicas):
        events = [(next_event(r), i) for i, r in enumerate(replicas)]
        (event_time, kind), index = min(events)
        if arrived < arrivals and next_arrival <= event_time:
            now = next_arrival
            least = min(r.held() for r in replicas)
            # Least connections, ties taken in turn; full everywhere: the 503 comes back.
            candidates = [i for i, r in enumerate(replicas) if r.held() == least]
            chosen = candidates[turn % len(candidates)]
            turn += 1
            replica = replicas[chosen]
            if least >= settings.slots + settings.queue:
                record(arrived)
            else:
                advance(replica, now)
                if len(replica.active) < settings.slots:
                    replica.active.append([1.0, now, arrived])
                else:
                    replica.waiting.append((now, arrived))
            arrived += 1
            next_arrival = now + rng.expovariate(rate)
            continue
        now = event_time
        replica = replicas[index]
        advance(replica, now)
        if kind == "done":
            job = min(replica.active, key=lambda j: j[0])
            replica.active.remove(job)
            record(job[2], now - job[1])
        else:
            record(replica.waiting.popleft()[1])
        while replica.waiting and len(replica.active) < settings.slots:
            replica.active.append([1.0, *replica.waiting.popleft()])
    outcome.busy = busy_seconds / (now * settings.replicas) if now else 0.0
    return outcome


def plan(rate_per_minute: float, p95_objective: float, speed: ReplicaSpeed, settings: Settings,
         max_503: float = 0.001, max_load: float = 0.8, max_replicas: int = 200,
         arrivals: int = 20000) -> list:
    """Rows for 1, 2, ... replicas until one meets the objective (its row is the last).
    max_load keeps headroom: a replica lost or restarting, a slower node, a deploy."""
    rows = []
    capacity = settings.slots / speed.seconds(settings.slots) * 60  # episodes/minute/replica
    # Fewer replicas than the load needs never meet an objective for long: their queues only
    # grow (a finite run could still look fine), so the search starts above full load.
    start = max(1, math.floor(rate_per_minute / capacity) + 1)
    for replicas in range(start, max_replicas + 1):
        outcome = simulate(rate_per_minute, speed,
                           Settings(replicas, settings.slots, settings.queue,
                                    settings.queue_timeout), arrivals=arrivals)
        row = {"replicas": replicas, "share_503": outcome.share_503,
               "p50": outcome.percentile(0.5), "p95": outcome.percentile(0.95),
               "utilisation": rate_per_minute / (capacity * replicas), "busy": outcome.busy}
        rows.append(row)
        if (row["share_503"] <= max_503 and row["p95"] <= p95_objective
                and row["utilisation"] <= max_load):
            break
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="episodes per minute to serve")
    parser.add_argument("--p95", type=float, default=10.0,
                        help="latency objective: p95 seconds per 256-token episode (10)")
    parser.add_argument("--max-503", type=float, default=0.001,
                        help="largest acceptable share of 503s (0.001)")
    parser.add_argument("--max-load", type=float, default=0.8,
                        help="highest share of the replicas' capacity to plan for (0.8)")
    parser.add_argument("--rates", metavar="JSON",
                        help="measured latencies, as written by capacity_check.py "
                             "(default: docs/benchmarks.md's figures)")
    parser.add_argument("--slots", type=int, default=3, help="GENERATION_CONCURRENCY (3)")
    parser.add_argument("--queue", type=int, default=16, help="QUEUE_SIZE (16)")
    parser.add_argument("--queue-timeout", type=float, default=30.0, help="QUEUE_TIMEOUT (30)")
    parser.add_argument("--arrivals", type=int, default=20000, help="simulated requests (20000)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.p95 <= 0 or args.slots < 1 or args.queue < 0 or args.max_load <= 0:
        parser.error("--rate, --p95 and --max-load must be above 0, --slots at least 1, "
                     "--queue at least 0")
    try:
        speed = ReplicaSpeed.from_json(args.rates) if args.rates else ReplicaSpeed(DOCUMENTED_LATENCY)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: cannot read --rates {args.rates}: {error}", file=sys.stderr)
        return 1
    settings = Settings(1, args.slots, args.queue, args.queue_timeout)
    per_replica = settings.slots / speed.seconds(settings.slots) * 60
    print(f"one replica: {args.slots} slots, {per_replica:.1f} episodes/minute at most "
          f"(latency with {args.slots} together: {speed.seconds(args.slots):.2f} s); "
          f"queue {args.queue} for {args.queue_timeout:g} s")
    print(f"target: {args.rate:g} episodes/minute, p95 <= {args.p95:g} s, "
          f"503s <= {args.max_503:.2%}, load <= {args.max_load:.0%}")
    print(f"{'replicas':>8} {'load':>6} {'CPU busy':>9} {'503s':>8} {'p50':>8} {'p95':>8}")
    rows = plan(args.rate, args.p95, speed, settings, args.max_503, args.max_load,
                arrivals=args.arrivals)
    for row in rows:
        print(f"{row['replicas']:>8} {row['utilisation']:>6.0%} {row['busy']:>9.0%} {row['share_503']:>8.2%} "
              f"{row['p50']:>7.2f}s {row['p95']:>7.2f}s")
    last = rows[-1]
    met = (last["share_503"] <= args.max_503 and last["p95"] <= args.p95
           and last["utilisation"] <= args.max_load)
    print(f"replicas needed: {last['replicas']}" if met else
          f"not met with up to {last['replicas']} replicas")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
