"""Engine throughput in-process (no HTTP): tokens/s at several numbers of
concurrent requests, time to first token, the share of draft tokens accepted,
and the process's RSS; with --prefill, the first token after a 1000-token
prefix and the longest pause it causes in a stream already running.

Builds a randomly initialised checkpoint of GPT-2 small's shape with the
project's scratch-model builder when the run folder does not exist yet.

    python benchmarks/engine_speed.py --checkpoint-dir build/bench --concurrency 1,3,8
    python benchmarks/engine_speed.py --speculative-tokens 0    # no drafts
    python benchmarks/engine_speed.py --prefill --concurrency 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(checkpoint_dir: str, run_name: str, options: list[str],
            env: dict | None = None) -> tuple[str, dict]:
    """This script in a process of its own (the engine gets the machine to
    itself): its printed report, and the figures of its --json line. Raises
    RuntimeError with its last error line when it fails."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--checkpoint-dir",
                           checkpoint_dir, "--run-name", run_name, *options, "--json"],
                          cwd=os.path.dirname(HERE), capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"engine_speed.py failed: {last}")
    return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def long_prefix(engine, tokens: int) -> str:
    """A text of exactly `tokens` tokens (or the nearest below)."""
    words = ("Ash and Pikachu walk on toward the next town while Brock tells a story. " * tokens).split()
    low, high = 1, len(words)
    while low < high:  # the most words that fit
        middle = (low + high + 1) // 2
        if engine.count_tokens(" ".join(words[:middle])) <= tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def prefill_figures(engine, prefix_tokens: int) -> dict:
    """First-token delay of a long prefix alone, then the pauses of a running
    stream around the moment the same prefix joins it."""
    import threading

    from app.engine import GenerationRequest

    prefix = long_prefix(engine, prefix_tokens)
    started = time.perf_counter()
    alone = engine.submit(GenerationRequest(prefix=prefix, length=8, stop_at_end=False))
    next(iter(alone.pieces()))
    first_token_alone = time.perf_counter() - started
    alone.result()

    running = engine.submit(GenerationRequest(prefix="Misty", length=1000, stop_at_end=False))
    arrivals = []
    reader = threading.Thread(target=lambda: arrivals.extend(time.perf_counter() for _ in running.pieces()))
    reader.start()
    while len(arrivals) < 30:
        time.sleep(0.01)
    joined_at = time.perf_counter()
    joining = engine.submit(GenerationRequest(prefix=prefix, length=8, stop_at_end=False))
    # Tokenizing the prefix (in this thread, holding the GIL) is done: from here on the
    # pauses are the prompt's reading, which the scheduler's chunk budget bounds.
    submitted_at = time.perf_counter()
    next(iter(joining.pieces()))
    first_token_joined = time.perf_counter() - joined_at
    joining.result()
    left_at, first_after = time.perf_counter(), len(arrivals)
    time.sleep(0.5)
    running.cancel()
    reader.join()
    during = sorted(b - a for a, b in zip(arrivals, arrivals[1:])
                    if a >= submitted_at and a <= joined_at + first_token_joined)
    # The stream's own step once the prefix has gone, at the depth it had reached meanwhile
    # (a step grows with the positions it attends to).
    after = [b - a for a, b in zip(arrivals, arrivals[1:]) if a >= left_at][:50]
    step = statistics.median(after)
    return {"prefix_tokens": engine.count_tokens(prefix), "first_token_alone": first_token_alone,
            "first_token_joined": first_token_joined, "step": step, "max_gap": during[-1],
            "max_gap_steps": during[-1] / step,
            "p95_gap_steps": during[int(0.95 * (len(during) - 1))] / step,
            "median_gap_steps": statistics.median(during) / step, "tokens_during": first_after - 30}


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
    parser.add_argument("--speculative-tokens", type=int, default=None,
                        help="draft tokens per step (default: the engine's; 0 for none)")
    parser.add_argument("--prefill", action="store_true",
                        help="also measure a 1000-token prefix: first token, pauses of a running stream")
    parser.add_argument("--json", action="store_true",
                        help="also print one last line {concurrency: tokens/s} for other scripts")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    run_dir = os.path.join(args.checkpoint_dir, args.run_name)
    if not os.path.isdir(run_dir):
        from pokegen.new_model import create_model_dir

        print(f"building a {args.preset} checkpoint in {run_dir} ...", flush=True)
        create_model_dir(run_dir, args.preset)

    from app.engine import Engine, GenerationRequest
    from app.engine.scheduler import SchedulerSettings

    scheduling = SchedulerSettings()
    if args.speculative_tokens is not None:
        scheduling.speculative_tokens = args.speculative_tokens
    started = time.perf_counter()
    engine = Engine(args.checkpoint_dir, args.run_name, max_batch=max(max(levels), 2),
                    max_queue=max(levels), threads=args.threads, scheduling=scheduling)
    engine.start()
    if not engine.wait_ready(600):
        sys.exit(f"engine failed: {engine.error}")
    print(f"ready in {time.perf_counter() - started:.1f} s, {engine.graph_ops()} graph ops, "
          f"{engine.weight_dtype} weights, RSS {rss_mib():.0f} MiB", flush=True)
    engine.submit(GenerationRequest(length=16)).result()

    print(f"speculation: {scheduling.speculative_tokens} draft tokens per step while at most "
          f"{scheduling.speculate_up_to} sequences decode; prompt chunks of {scheduling.prefill_chunk}")
    print(f"{'concurrent':>10} {'tokens/s':>9} {'first token p50':>16} {'drafts kept':>12} {'RSS MiB':>8}")
    rates, acceptance = {}, {}
    for level in levels:
        best, firsts, kept = 0.0, [], ""
        for _ in range(args.rounds):
            before = engine.stats()
            rate, first = run_batch(engine, level, args.length)
            after = engine.stats()
            drafted = after["draft_tokens"] - before["draft_tokens"]
            accepted = after["draft_tokens_accepted"] - before["draft_tokens_accepted"]
            if rate > best:
                best, firsts = rate, first
                kept = f"{accepted}/{drafted}" if drafted else "none made"
                acceptance[str(level)] = accepted / drafted if drafted else None
        print(f"{level:>10} {best:>9.1f} {statistics.median(firsts) * 1000:>13.0f} ms {kept:>12} "
              f"{rss_mib():>8.0f}", flush=True)
        rates[str(level)] = best
    if args.prefill:
        p = prefill_figures(engine, 1000)
        print(f"prefill: {p['prefix_tokens']}-token prefix, first token {p['first_token_alone']:.2f} s "
              f"alone, {p['first_token_joined']:.2f} s joining a running stream; that stream's longest "
              f"pause meanwhile {p['max_gap'] * 1000:.0f} ms = {p['max_gap_steps']:.1f} of its usual "
              f"steps ({p['step'] * 1000:.1f} ms, once the prefix has gone), {p['tokens_during']} "
              f"tokens written meanwhile; its pauses were {p['median_gap_steps']:.1f} steps at the "
              f"median, {p['p95_gap_steps']:.1f} at p95",
              flush=True)
        rates["prefill"] = p
    rates["acceptance"] = acceptance
    engine.close()
    print(f"rerun: .venv/bin/python benchmarks/engine_speed.py {' '.join(sys.argv[1:])}")
    if args.json:
        print(json.dumps(rates), flush=True)


if __name__ == "__main__":
    main()
