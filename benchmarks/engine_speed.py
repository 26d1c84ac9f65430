"""Engine throughput in-process (no HTTP): tokens/s at several numbers of
concurrent requests, time to first token, and the process's RSS.

Builds a randomly initialised checkpoint of GPT-2 small's shape with the
project's scratch-model builder when the run folder does not exist yet.

    python benchmarks/engine_speed.py --checkpoint-dir build/bench --concurrency 1,3,8
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_batch(engine, concurrency: int, length: int) -> tuple[float, list[float]]:
    """Submits `concurrency` requests at once; aggregate tokens/s and each one's first-token delay."""
    from app.engine import GenerationRequest

    started = time.perf_counter()
    generations = [engine.submit(GenerationRequest(prefix=f"Pikachu and Ash were {i}", length=length,
                                                   stop_at_end=False))
                   for i in range(concurrency)]
    first = []
    for generation in generations:
        next(iter(generation.pieces()), None)
        first.append(time.perf_counter() - started)
    tokens = sum(g.result().tokens for g in generations)
    return tokens / (time.perf_counter() - started), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", default="build/bench-checkpoint")
    parser.add_argument("--run-name", default="run1")
    parser.add_argument("--preset", default="gpt2-small", help="scratch preset when building")
    parser.add_argument("--concurrency", default="1,3,8", help="comma-separated")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="runs per concurrency (best kept)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true",
                        help="also print one last line {concurrency: tokens/s} for other scripts")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    run_dir = os.path.join(args.checkpoint_dir, args.run_name)
    if not os.path.isdir(run_dir):
        import scratch_model

        print(f"building a {args.preset} checkpoint in {run_dir} ...", flush=True)
        scratch_model.create_model_dir(run_dir, args.preset)

    from app.engine import Engine, GenerationRequest

    started = time.perf_counter()
    engine = Engine(args.checkpoint_dir, args.run_name, max_batch=max(levels),
                    max_queue=max(levels), threads=args.threads)
    engine.start()
    if not engine.wait_ready(600):
        sys.exit(f"engine failed: {engine.error}")
    print(f"ready in {time.perf_counter() - started:.1f} s, {engine.graph_ops()} graph ops, "
          f"{engine.weight_dtype} weights, RSS {rss_mib():.0f} MiB", flush=True)
    engine.submit(GenerationRequest(length=16)).result()

    print(f"{'concurrent':>10} {'tokens/s':>9} {'first token p50':>16} {'RSS MiB':>8}")
    rates = {}
    for level in levels:
        best, firsts = 0.0, []
        for _ in range(args.rounds):
            rate, first = run_batch(engine, level, args.length)
            if rate > best:
                best, firsts = rate, first
        print(f"{level:>10} {best:>9.1f} {statistics.median(firsts) * 1000:>13.0f} ms {rss_mib():>8.0f}",
              flush=True)
        rates[str(level)] = best
    engine.close()
    if args.json:
        print(json.dumps(rates), flush=True)


if __name__ == "__main__":
    main()
