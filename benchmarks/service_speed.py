"""Speed and memory of the whole service (nginx -> uWSGI -> engine on
127.0.0.1) next to gpt-2-simple, on a randomly initialised checkpoint of GPT-2
small's exact shape, with the service's targets marked met or not.

    python benchmarks/service_speed.py            # the full run
    python benchmarks/service_speed.py --quick    # a smoke run: few, short requests

1. Builds the checkpoint once with pokegen.new_model (kept in build/bench/).
2. Measures gpt-2-simple in separate processes (benchmarks/gpt2_simple_anchors.py):
   generate() on a persistent session, its sampling loop built once, and the
   original's load-and-generate per request; and the engine alone, in-process
   (benchmarks/engine_speed.py), one stream, for what the stack around it costs.
3. Starts scripts/serve.sh (as `make serve` does) on a free port, then at each
   concurrency sends episodes through nginx's /stream: aggregate tokens/s,
   latency per episode, time to the first streamed token, and the service's
   RSS (uWSGI master + worker, nginx master + workers, from /proc).
4. Sends --growth-requests episodes to / and compares the service's RSS before
   and after, and the engine's graph size.
Every request asks for a fixed seed; the `tokens` the service reports is checked
against the length asked for.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from benchmarks import engine_speed
from benchmarks.speed_client import ServiceMemory, json_episode, run_round, stream_episode
from benchmarks.speed_report import check_targets, format_report
from pokegen.atomic_files import atomic_write_text

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DEFAULT_CHECKPOINT_DIR = os.path.join("build", "bench", "gpt2-small")
RUN_NAME = "run1"
# Requests that may wait for a slot; with GENERATION_CONCURRENCY + 2 it must stay
# within uwsgi.ini's request threads (32).
QUEUE_SIZE = 8
QUICK = dict(length=24, requests_per_level=0, growth_requests=16, anchor_calls=2)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}",
          file=sys.stderr, flush=True)


# ------------------------------------------------------------------ set-up

def ensure_checkpoint(checkpoint_dir: str, preset: str) -> None:
    """Builds the random checkpoint with the project's own code, once."""
    run_dir = os.path.join(checkpoint_dir, RUN_NAME)
    if os.path.isfile(os.path.join(run_dir, "checkpoint")):
        return
    log(f"building a random {preset} checkpoint in {run_dir}")
    # In a child process: the benchmark's own process stays free of TensorFlow.
    done = subprocess.run([sys.executable, "-m", "pokegen.new_model", run_dir, "--preset", preset],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"cannot build the checkpoint in {run_dir}: {last}")


def model_description(checkpoint_dir: str, weights: str = "random weights") -> str:
    with open(os.path.join(checkpoint_dir, RUN_NAME, "hparams.json")) as f:
        hp = json.load(f)
    return (f"{hp['n_layer']} layers, {hp['n_embd']} wide, {hp['n_head']} heads, n_ctx "
            f"{hp['n_ctx']}, {hp['n_vocab']}-token vocabulary ({weights})")


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


class OtherCpu:
    """CPU that processes outside this benchmark used, in cores on average:
    the machine's busy time (/proc/stat) minus this process's and its reaped
    children's (the anchors; the stack once stopped)."""

    def __init__(self):
        self.mark()

    @staticmethod
    def _machine_busy() -> float:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def mark(self) -> None:
        self._wall, self._busy, self._own = time.monotonic(), self._machine_busy(), self._ours()

    def cores_since_mark(self) -> float:
        wall = time.monotonic() - self._wall
        other = (self._machine_busy() - self._busy) - (self._ours() - self._own)
        self.mark()
        return max(0.0, other) / wall


# ----------------------------------------------------------------- anchors

def run_anchors(args) -> dict:
    """Each gpt-2-simple measurement in a fresh process of its own."""
    anchors, errors = {}, {}
    common = ["--checkpoint-dir", args.checkpoint_dir, "--run-name", RUN_NAME,
              "--length", str(args.length)]
    plan = [("generate", ["--calls", str(args.anchor_calls)]),
            ("loop", ["--calls", str(args.anchor_calls), "--batches", args.loop_batches]),
            ("per-request", ["--calls", str(args.per_request_calls)])]
    for mode, extra in plan:
        log(f"gpt-2-simple {mode}")
        done = subprocess.run([sys.executable, os.path.join(HERE, "gpt2_simple_anchors.py"), mode]
                              + common + extra, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            errors[mode] = (done.stderr.strip().splitlines() or ["no output"])[-1]
            continue
        anchors[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    if errors:
        anchors["errors"] = errors
    return anchors


def run_in_process(args) -> dict:
    """The engine alone (benchmarks/engine_speed.py), one stream: what the stack costs."""
    log("the engine in-process, one stream")
    try:
        _, figures = engine_speed.measure(args.checkpoint_dir, RUN_NAME,
                                          ["--concurrency", "1", "--length", str(args.length)])
    except RuntimeError as error:
        return {"error": str(error)}
    return {"tokens_per_second": figures["1"]}


# ------------------------------------------------------------------ service

def start_stack(args):
    from pokegen.service_stack import ServiceStack

    settings = dict(CHECKPOINT_DIR=os.path.abspath(args.checkpoint_dir), RUN_NAME=RUN_NAME,
                    GENERATION_CONCURRENCY=args.generation_concurrency, QUEUE_SIZE=QUEUE_SIZE,
                    # One client address stands for every user here.
                    RATE_LIMIT=1000, RATE_BURST=2000, CONNECTION_LIMIT=1000,
                    CLIENT_GENERATION_LIMIT=1000)
    log("starting the stack (scripts/serve.sh): " + " ".join(f"{k}={v}" for k, v in settings.items()))
    return ServiceStack(**settings).start(timeout=600)


def requests_at(concurrency: int, per_level: int) -> int:
    """At least two full rounds, and whole rounds only, so every request runs
    alongside `concurrency - 1` others."""
    rounds = max(2, -(-per_level // concurrency))
    return rounds * concurrency


def measure_service(args, stack) -> dict:
    memory = ServiceMemory(stack.server_processes)
    results = {"idle_rss": memory(), "idle_by_name": dict(memory.by_name), "levels": []}
    # Warm the path once (connections, first pieces); the engine warmed its graph at load.
    stream_episode(stack.url, args.length, seed=0)
    seed = 1000
    for concurrency in args.levels:
        count = requests_at(concurrency, args.requests_per_level)
        log(f"{count} episodes at {concurrency} concurrent")
        measured = run_round(stack.url, concurrency=concurrency, requests_count=count,
                             length=args.length, first_seed=seed, rss=memory)
        seed += count
        results["levels"].append(_level_figures(measured))
        if concurrency == args.growth_concurrency and args.growth_requests:
            results["growth"] = measure_growth(args, stack, memory, seed)
            seed += args.growth_requests
    if args.growth_requests and "growth" not in results:
        results["growth"] = measure_growth(args, stack, memory, seed)
    return results


def measure_growth(args, stack, memory, first_seed: int) -> dict:
    """RSS before and after many episodes at one concurrency (the warm-up is
    the level run just before it at the same concurrency)."""
    log(f"growth: {args.growth_requests} episodes to / at {args.growth_concurrency} concurrent")
    ops_before = stack.get("/info").json()["graph_ops"]
    rss_start = memory()
    measured = run_round(stack.url, concurrency=args.growth_concurrency,
                         requests_count=args.growth_requests, length=args.length,
                         first_seed=first_seed, episode=json_episode, rss=memory)
    figures = _level_figures(measured)
    return {**figures, "length": args.length, "rss_start": rss_start,
            "rss_end": measured.rss_end, "rss_change": measured.rss_end / rss_start - 1,
            "graph_ops_before": ops_before, "graph_ops_after": stack.get("/info").json()["graph_ops"]}


def _level_figures(measured) -> dict:
    failed = measured.failed
    return {"concurrency": measured.concurrency, "requests": len(measured.episodes),
            "tokens_per_second": measured.tokens_per_second, "latency": measured.latency(),
            "first_token": measured.first_token(), "rss_peak": measured.rss_peak,
            "rss_end": measured.rss_end, "wall_seconds": measured.wall_seconds,
            "tokens": [e.tokens for e in measured.episodes], "failed": len(failed),
            "first_error": failed[0].error if failed else None, "short": len(measured.short)}


# --------------------------------------------------------------------- run

def run(args) -> dict:
    load_start = os.getloadavg()
    log(f"start; {os.cpu_count()} cores")
    ensure_checkpoint(args.checkpoint_dir, args.preset)
    other_cpu = OtherCpu()
    anchors = run_anchors(args) if args.anchors else {}
    in_process = run_in_process(args)
    if "error" in in_process:
        anchors.setdefault("errors", {})["in-process"] = in_process["error"]
    else:
        anchors["in-process"] = in_process
    other_cores = {"anchors": other_cpu.cores_since_mark()}
    stack = start_stack(args)
    try:
        results = measure_service(args, stack)
    finally:
        status = stack.stop()
    other_cores["service"] = other_cpu.cores_since_mark()
    if status not in (0, 143):
        log(f"the stack stopped with status {status}; its log ends:\n{stack.log(2000)}")
    results.update(
        anchors=anchors, command=args.command,
        machine={"cores": os.cpu_count(), "cpu": cpu_model(), "load_start": load_start,
                 "load_end": os.getloadavg(), "other_cores": other_cores},
        settings={"model": model_description(args.checkpoint_dir), "length": args.length,
                  "anchor_length": args.length,
                  "generation_concurrency": args.generation_concurrency,
                  "levels": args.levels, "quick": args.quick})
    results["targets"] = check_targets(results)
    return results


def write_json(path: str, results: dict) -> None:
    atomic_write_text(path, json.dumps(results, indent=1))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure the real nginx + uWSGI + engine stack against gpt-2-simple on a "
                    "GPT-2-small-shaped random checkpoint; print the figures and the targets.")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK['length']}-token episodes, one round per "
                             f"concurrency, {QUICK['growth_requests']} growth requests, "
                             f"{QUICK['anchor_calls']} anchor calls")
    parser.add_argument("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR,
                        help="folder of the run1 checkpoint, built there when missing "
                             f"({DEFAULT_CHECKPOINT_DIR})")
    parser.add_argument("--preset", default="gpt2-small",
                        help="pokegen.new_model preset when building (gpt2-small)")
    parser.add_argument("--levels", default="1,3,8,16", help="concurrencies to measure (1,3,8,16)")
    parser.add_argument("--generation-concurrency", type=int, default=16,
                        help="GENERATION_CONCURRENCY of the stack: requests decoded together (16)")
    parser.add_argument("--length", type=int, default=256, help="tokens per episode (256)")
    parser.add_argument("--requests-per-level", type=int, default=24,
                        help="episodes per concurrency, rounded up to whole rounds, at least "
                             "two (24)")
    parser.add_argument("--growth-requests", type=int, default=500,
                        help="episodes between the two RSS readings of the growth check (500)")
    parser.add_argument("--growth-concurrency", type=int, default=8,
                        help="concurrency of the growth check (8)")
    parser.add_argument("--anchor-calls", type=int, default=4,
                        help="gpt-2-simple generate() calls and loop runs; the first is a "
                             "warm-up (4)")
    parser.add_argument("--per-request-calls", type=int, default=3,
                        help="requests of the original's load-and-generate (3)")
    parser.add_argument("--loop-batches", default="1,8",
                        help="batch sizes of gpt-2-simple's loop built once (1,8)")
    parser.add_argument("--no-anchors", dest="anchors", action="store_false",
                        help="skip gpt-2-simple (no ratios)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            if parser.get_default(name) == getattr(args, name):
                setattr(args, name, value)
        if args.per_request_calls == parser.get_default("per_request_calls"):
            args.per_request_calls = 1
    try:
        args.levels = sorted({int(c) for c in args.levels.split(",")})
        [int(b) for b in args.loop_batches.split(",")]
    except ValueError:
        parser.error("--levels and --loop-batches must be comma-separated integers")
    numbers = dict(levels=min(args.levels), length=args.length,
                   generation_concurrency=args.generation_concurrency,
                   growth_concurrency=args.growth_concurrency, anchor_calls=args.anchor_calls,
                   per_request_calls=args.per_request_calls)
    for name, value in numbers.items():
        if value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.requests_per_level < 0 or args.growth_requests < 0:
        parser.error("--requests-per-level and --growth-requests must be 0 or more")
    if not 1 <= args.length <= 1000:
        parser.error("--length must be from 1 to 1000 (the prefix needs room in the context)")
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else "python"
    args.command = " ".join([python, "benchmarks/service_speed.py"]
                            + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except KeyboardInterrupt:
        print("benchmark interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:  # no checkpoint, or the stack did not start: the message says why
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        write_json(args.json, results)
    print(format_report(results), flush=True)
    broken = any(lv["failed"] for lv in results["levels"]) or \
        (results.get("growth") or {}).get("failed")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
