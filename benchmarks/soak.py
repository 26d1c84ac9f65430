"""Soak test of the real service, nginx -> uWSGI -> engine on 127.0.0.1,
through nginx only. One scenario after another:

  mix        valid generations of a few tokens and hostile input (soak_requests.py)
  overload   256-token episodes from twice as many clients as the service holds
             (GENERATION_CONCURRENCY decoding + QUEUE_SIZE waiting), so that the
             queue fills and the 503 with Retry-After is answered
  head       HEAD of the page, of episodes and of streams
  leave      streams of 1000 tokens whose clients leave after the first piece;
             the engine's own gauges (/metrics) must go back to idle
  flood      1000-character prefixes of distinct words (CJK, random Latin)
  headers    request heads over nginx's limits: a 4xx, never a 5xx

while, throughout, a probe times /healthz and slowloris clients hold idle
connections that trickle a request head. It checks that every request is
answered within its deadline and keeps the rules (no 5xx but 503 with
Retry-After, every refusal a JSON reason), that the overload met a full queue,
that left streams were cancelled and freed their slots, that /healthz always
answered, and that the service's memory (uWSGI master and worker, nginx master
and worker) at the end is within 5% of what it was after the warm-up (a tenth
of every scenario). It prints the figures and the command that reruns it.

    python benchmarks/soak.py                    # its own stack, a few minutes
    python benchmarks/soak.py --requests 150 --episodes 80 --slowloris 50
    python benchmarks/soak.py --url http://127.0.0.1:5000 --service-pid PID   # a running stack

By default it starts scripts/serve.sh (as `make serve` does) on a free port
over a freshly initialised tiny model. One client address stands for many
users here, so the stack it starts allows that address --rate-limit requests
a second (the limiter has its own tests). A stack given with --url must have
no other traffic: the left streams are counted with the engine's gauges.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import urlsplit

import aiohttp
import requests

from benchmarks.service_speed import cpu_model
from benchmarks.soak_client import (TOKENS, Slowloris, engine_gauges, leave_a_stream,
                                    probe_health, seconds_until_idle, send_all, send_one)
from benchmarks.soak_requests import OVERLOADED, request_mix
from benchmarks.soak_scenarios import (LEFT_STREAM_LENGTH, flood_probes, head_probes,
                                       left_stream_probes, overload_probes, oversized_head_probes)
from benchmarks.speed_client import PeakSampler

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

RSS_TOLERANCE = 0.05
# A left stream must not run on: it may generate at most this share of its length.
LEFT_TOKENS_TOLERANCE = 0.5
# Seconds the engine has to be idle again once the last client left its stream.
IDLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Sizes:
    """Requests per scenario, and the slowloris connections held throughout."""
    mix: int = 1000
    episodes: int = 150
    heads: int = 60
    left_streams: int = 60
    floods: int = 100
    oversized_heads: int = 60
    slowloris: int = 256

    def share(self, fraction: float) -> "Sizes":
        return Sizes(**{name: max(1, math.ceil(value * fraction)) if value else 0
                        for name, value in vars(self).items()})


@dataclass
class Scenario:
    name: str
    clients: int              # requests at once
    outcomes: list
    started: float            # time.monotonic()
    ended: float

    @property
    def statuses(self) -> Counter:
        return Counter(o.status if o.status is not None else "no answer" for o in self.outcomes)

    @property
    def latency(self) -> dict:
        return percentiles([o.seconds for o in self.outcomes if o.status is not None])


@dataclass
class LeftStreams:
    left: int                 # streams answered and left after their first piece
    tokens_asked: int
    tokens_generated: int     # the engine's own count, from the first to the last
    idle_before: Optional[float]  # seconds the engine took to be idle before (None: never)
    idle_after: Optional[float]   # seconds from the last leaving to an idle engine


@dataclass
class SoakReport:
    base_url: str
    capacity: dict            # "decoding", "waiting"
    deadline: float
    wall_seconds: float
    scenarios: list
    left: LeftStreams
    health: list              # HealthSample, throughout the measured run
    slowloris: Slowloris
    rss_start: Optional[int]  # bytes, after the warm-up
    rss_end: Optional[int]
    rss_peak: Optional[int]
    load_average: tuple = ()  # the machine's 1-minute load at the start and at the end
    problems: list = field(default_factory=list)  # answers that broke a rule, warm-up included

    @property
    def outcomes(self) -> list:
        return [o for scenario in self.scenarios for o in scenario.outcomes]

    @property
    def statuses(self) -> Counter:
        return sum((s.statuses for s in self.scenarios), Counter())

    @property
    def rss_change(self) -> Optional[float]:
        if not self.rss_start or self.rss_end is None:
            return None
        return self.rss_end / self.rss_start - 1

    def scenario(self, name: str) -> Scenario:
        return next(s for s in self.scenarios if s.name == name)

    def failures(self) -> list[str]:
        failed = []
        unanswered = self.statuses.get("no answer", 0)
        if unanswered:
            failed.append(f"{unanswered} requests got no answer within {self.deadline:g} s")
        if self.problems:
            failed.append(f"{len(self.problems)} answers broke a rule, e.g. {self.problems[0]}")
        if not self.scenario("overload").statuses[OVERLOADED]:
            failed.append("the overload never met a full queue (no 503)")
        failed += _left_failures(self.left)
        unhealthy = [h for h in self.health if h.status != 200]
        if not self.health or unhealthy:
            failed.append(f"/healthz: {len(unhealthy)} of {len(self.health)} probes not "
                          f"answered 200")
        if self.slowloris.sockets and self.slowloris.most_open < self.slowloris.sockets:
            failed.append(f"slowloris: only {self.slowloris.most_open} of "
                          f"{self.slowloris.sockets} connections were open at once")
        if self.rss_change is not None and self.rss_change > RSS_TOLERANCE:
            failed.append(f"service RSS grew {self.rss_change:+.1%} (more than "
                          f"{RSS_TOLERANCE:.0%}) after the warm-up")
        return failed


def _left_failures(left: LeftStreams) -> list[str]:
    if not left.left:
        return ["no stream was left: every one was refused"]
    failed = []
    if left.idle_before is None:
        failed.append(f"the engine was not idle {IDLE_TIMEOUT:g} s after the HEAD requests")
    if left.idle_after is None:
        failed.append(f"the engine was not idle {IDLE_TIMEOUT:g} s after the last client left "
                      f"its stream")
    if left.tokens_generated >= LEFT_TOKENS_TOLERANCE * left.tokens_asked:
        failed.append(f"left streams ran on: {left.tokens_generated} tokens generated of "
                      f"{left.tokens_asked} asked")
    return failed


def percentiles(values: list[float]) -> dict:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return {"p50": math.nan, "p95": math.nan, "max": math.nan}

    def at(fraction):
        return values[min(len(values) - 1, math.ceil(fraction * len(values)) - 1)]
    return {"p50": at(0.50), "p95": at(0.95), "max": values[-1]}


# ------------------------------------------------------------- measuring memory

def stack_rss(processes: Callable[[], list]) -> Callable[[], int]:
    """Sum of the resident memory of the processes `processes()` lists now."""
    import psutil

    def total() -> int:
        rss = 0
        for process in processes():
            try:
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass  # ended between the listing and the reading
        return rss
    return total


def processes_under(pids: list[int]) -> Callable[[], list]:
    """uWSGI and nginx processes among `pids` and their descendants."""
    import psutil

    def listing() -> list:
        found = []
        for pid in pids:
            try:
                root = psutil.Process(pid)
                found += [p for p in [root] + root.children(recursive=True)
                          if p.name() in ("uwsgi", "nginx")]
            except psutil.NoSuchProcess:
                pass
        return found
    return listing


# ------------------------------------------------------------- the scenarios

async def _scenarios(session, url: str, sizes: Sizes, capacity: int, concurrency: int,
                     deadline: float, until: float, seed: int) -> tuple[list, LeftStreams]:
    """Each scenario in turn; the left streams' figures."""
    done = []

    async def scenario(name, probes, clients, send=send_one):
        started = time.monotonic()
        outcomes = await send_all(session, url, probes, concurrency=clients, deadline=deadline,
                                  time_limit=max(1.0, until - started), send=send)
        done.append(Scenario(name, clients, outcomes, started, time.monotonic()))
        return outcomes

    await scenario("mix", request_mix(sizes.mix, seed), concurrency)
    await scenario("overload", overload_probes(sizes.episodes, seed), 2 * capacity)
    await scenario("head", head_probes(sizes.heads, seed), capacity)
    # The engine's token count is the left streams' own only once the rest is done.
    idle_before = await seconds_until_idle(session, url, IDLE_TIMEOUT)
    before = (await engine_gauges(session, url))[TOKENS]
    left = await scenario("leave", left_stream_probes(sizes.left_streams, seed), capacity,
                          send=leave_a_stream)
    idle_after = await seconds_until_idle(session, url, IDLE_TIMEOUT)
    generated = (await engine_gauges(session, url))[TOKENS] - before
    answered = sum(1 for o in left if o.status == 200 and not o.problem)
    await scenario("flood", flood_probes(sizes.floods, seed), concurrency)
    await scenario("headers", oversized_head_probes(sizes.oversized_heads), concurrency)
    return done, LeftStreams(answered, answered * LEFT_STREAM_LENGTH, int(generated),
                             idle_before, idle_after)


async def _run(url: str, sizes: Sizes, capacity: int, concurrency: int, deadline: float,
               time_limit: float, seed: int, health: list, slowloris: Slowloris):
    """The scenarios with the /healthz probe and the slowloris clients beside them."""
    stop = asyncio.Event()
    address = urlsplit(url)
    connector = aiohttp.TCPConnector(limit=0)  # the scenarios' clients set the concurrency
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=deadline)) as session:
        beside = [asyncio.create_task(probe_health(session, url, health, stop)),
                  asyncio.create_task(slowloris.run(address.hostname, address.port, stop))]
        try:
            return await _scenarios(session, url, sizes, capacity, concurrency, deadline,
                                    time.monotonic() + time_limit, seed)
        finally:
            stop.set()
            await asyncio.gather(*beside)


def read_capacity(url: str) -> dict:
    """Generations decoded at once and requests allowed to wait, from /info."""
    limits = requests.get(url + "/info", timeout=30).json()["limits"]
    return {"decoding": limits["max_batch"], "waiting": limits["max_queue"]}


def run_soak(base_url: str, rss: Optional[Callable[[], int]] = None, *, sizes: Sizes = Sizes(),
             concurrency: int = 16, warmup: float = 0.1, deadline: float = 60.0,
             time_limit: float = 1800.0, seed: int = 1) -> SoakReport:
    """A warm-up (a `warmup` share of every scenario), then the measured run.
    `rss()` reads the service's memory (or None)."""
    url = base_url.rstrip("/")
    load_start = os.getloadavg()[0]
    capacity = read_capacity(url)
    total = capacity["decoding"] + capacity["waiting"]
    options = dict(capacity=total, concurrency=concurrency, deadline=deadline,
                   time_limit=time_limit)
    warm, _ = asyncio.run(_run(url, sizes.share(warmup), seed=seed + 1_000_000, health=[],
                               slowloris=Slowloris(sizes.share(warmup).slowloris), **options))
    rss_start = rss() if rss else None
    health, slowloris = [], Slowloris(sizes.slowloris)
    started = time.monotonic()
    with PeakSampler(rss or (lambda: 0), interval=1.0) as sampler:
        scenarios, left = asyncio.run(_run(url, sizes, seed=seed, health=health,
                                           slowloris=slowloris, **options))
    wall = time.monotonic() - started
    rss_end = rss() if rss else None
    return SoakReport(
        base_url=url, capacity=capacity, deadline=deadline,
        wall_seconds=wall, scenarios=scenarios, left=left, health=health, slowloris=slowloris,
        rss_start=rss_start, rss_end=rss_end,
        rss_peak=max(sampler.peak, rss_start or 0, rss_end or 0) if rss else None,
        load_average=(load_start, os.getloadavg()[0]),
        problems=[o.problem for s in warm + scenarios for o in s.outcomes if o.problem])


# ------------------------------------------------------------- the report

def _seconds(value: float) -> str:
    return f"{value:.3f} s"


def _by_status(statuses: Counter) -> str:
    answered = sorted((k, v) for k, v in statuses.items() if k != "no answer")
    text = ", ".join(f"{status}: {count}" for status, count in answered)
    unanswered = statuses.get("no answer", 0)
    return text + (f", no answer: {unanswered}" if unanswered else "")


def _seconds_by_status(scenario: Scenario) -> dict:
    by_status = {}
    for outcome in scenario.outcomes:
        if outcome.status is not None:
            by_status.setdefault(outcome.status, []).append(outcome.seconds)
    return by_status


def _health_p95(health: list, started: float, ended: float) -> str:
    inside = [h.seconds for h in health if started <= h.at < ended and h.status == 200]
    return _seconds(percentiles(inside)["p95"]) if inside else "-"


def format_report(report: SoakReport, command: str) -> str:
    def mib(value):
        return f"{value / 2**20:.1f} MiB"

    capacity = report.capacity
    outcomes = report.outcomes
    lines = [
        f"soak of {report.base_url}: capacity {capacity['decoding'] + capacity['waiting']} "
        f"({capacity['decoding']} decoding + {capacity['waiting']} waiting); {len(outcomes)} "
        f"requests in {report.wall_seconds:.1f} s, after a warm-up",
        f"machine: {cpu_model()}, {os.cpu_count()} cores; load average "
        f"{report.load_average[0]:.1f} at the start, {report.load_average[1]:.1f} at the end",
        f"{'scenario':<10} {'at once':>7} {'requests':>8} {'took':>7}  {'p95':>9}  "
        f"{'/healthz p95':>12}  answers by status",
    ]
    for s in report.scenarios:
        lines.append(f"{s.name:<10} {s.clients:>7} {len(s.outcomes):>8} "
                     f"{s.ended - s.started:>6.1f}s  {_seconds(s.latency['p95']):>9}  "
                     f"{_health_p95(report.health, s.started, s.ended):>12}  "
                     f"{_by_status(s.statuses)}")
    latency = percentiles([o.seconds for o in outcomes if o.status is not None])
    lines.append(f"{'total':<10} {'':>7} {len(outcomes):>8} {report.wall_seconds:>6.1f}s  "
                 f"{_seconds(latency['p95']):>9}  "
                 f"{_health_p95(report.health, -math.inf, math.inf):>12}  "
                 f"{_by_status(report.statuses)}")
    lines.append(f"latency, every answer: p50 {_seconds(latency['p50'])}, p95 "
                 f"{_seconds(latency['p95'])}, max {_seconds(latency['max'])}")
    # The flood's CJK prefixes are its 400s (over the context), the Latin ones its 200s.
    lines.append("flood latency by answer: " + ", ".join(
        f"{status} p95 {_seconds(percentiles(seconds)['p95'])}"
        for status, seconds in sorted(_seconds_by_status(report.scenario("flood")).items())))
    server_errors = Counter({s: n for s, n in report.statuses.items()
                             if s != "no answer" and s >= 500})
    by_design = (set(server_errors) <= {OVERLOADED}
                 and not [o for o in outcomes if o.status == OVERLOADED and o.problem])
    lines.append(f"5xx: {_by_status(server_errors) or 'none'}; "
                 + ("no 5xx except by design (every 503 with Retry-After)" if by_design
                    else "5xx NOT by design"))
    healthy = [h.seconds for h in report.health if h.status == 200]
    health = percentiles(healthy)
    lines.append(f"/healthz probe throughout: {len(report.health)} probes, {len(healthy)} "
                 f"answered 200, p50 {_seconds(health['p50'])}, p95 {_seconds(health['p95'])}, "
                 f"max {_seconds(health['max'])}")
    left = report.left
    idle = "never" if left.idle_after is None else f"{left.idle_after:.1f} s"
    share = left.tokens_generated / left.tokens_asked if left.tokens_asked else math.nan
    lines.append(f"slots freed after disconnects: {left.left} streams of {LEFT_STREAM_LENGTH} "
                 f"tokens left after their first piece; {left.tokens_generated} tokens generated "
                 f"of {left.tokens_asked} asked ({share:.1%}); nothing decoding or waiting {idle} "
                 f"after the last left")
    loris = report.slowloris
    held = percentiles(loris.held)
    dropped = (f"the server dropped {len(loris.held)}, each after p50 {held['p50']:.1f} s "
               f"(max {held['max']:.1f} s)" if loris.held else "the server dropped none")
    lines.append(f"slowloris: {loris.sockets} connections trickling a request head, "
                 f"{loris.most_open} open at once, {loris.opened} opened in all; {dropped}")
    if report.rss_start is not None:
        lines.append(f"service RSS (uWSGI master + worker, nginx master + worker): "
                     f"{mib(report.rss_start)} after warm-up -> {mib(report.rss_end)} at the end "
                     f"({report.rss_change:+.1%}), peak {mib(report.rss_peak)}")
    else:
        lines.append("service RSS: not measured (give --service-pid)")
    failures = report.failures()
    lines += [f"FAILED: {failure}" for failure in failures] or ["all checks passed"]
    lines += [f"  {problem}" for problem in report.problems[1:6]]
    lines.append(f"rerun: {command}")
    return "\n".join(lines)


# ------------------------------------------------------------- the command

def _arguments():
    defaults = Sizes()
    parser = argparse.ArgumentParser(
        description="Soak the real nginx + uWSGI + engine stack: valid and hostile requests, "
                    "overload, HEAD, left streams, floods of long prefixes, oversized heads, "
                    "with a /healthz probe and slowloris clients throughout; check answers, "
                    "deadlines, freed slots and memory.")
    for name, help_text in [("requests", "requests of the mix"),
                            ("episodes", "256-token episodes of the overload"),
                            ("heads", "HEAD requests"),
                            ("left-streams", "streams left after their first piece"),
                            ("floods", "long prefixes of distinct words"),
                            ("oversized-heads", "requests with oversized heads"),
                            ("slowloris", "idle connections held throughout")]:
        field_name = "mix" if name == "requests" else name.replace("-", "_")
        default = getattr(defaults, field_name)
        parser.add_argument(f"--{name}", type=int, default=default,
                            help=f"{help_text} ({default})")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests at once in the mix, the flood and the heads (16); the "
                             "overload sends twice the capacity, HEAD and left streams the "
                             "capacity")
    parser.add_argument("--warmup", type=float, default=0.1,
                        help="share of every scenario sent before memory is first read (0.1)")
    parser.add_argument("--deadline", type=float, default=60.0,
                        help="seconds each request may take (60)")
    parser.add_argument("--time-limit", type=float, default=1800.0,
                        help="seconds the measured run may take in all (1800)")
    parser.add_argument("--seed", type=int, default=1, help="picks the requests (1)")
    parser.add_argument("--url", help="soak a running stack at this 127.0.0.1 address "
                                      "instead of starting one")
    parser.add_argument("--service-pid", type=int, action="append", default=[],
                        help="with --url: a process of the stack (serve.sh, or uWSGI's and "
                             "nginx's masters) whose uwsgi/nginx tree is measured; repeatable")
    parser.add_argument("--checkpoint-dir",
                        help="the stack it starts serves --run-name from here (default: a "
                             "fresh tiny model)")
    parser.add_argument("--run-name", default="run1", help="the run to serve (run1)")
    parser.add_argument("--generation-concurrency", type=int, default=3,
                        help="GENERATION_CONCURRENCY of the stack it starts (3, the default)")
    parser.add_argument("--queue-size", type=int, default=16,
                        help="QUEUE_SIZE of the stack it starts (16, the default)")
    parser.add_argument("--rate-limit", type=int, default=1000,
                        help="requests a second the stack it starts allows this one address "
                             "(1000)")
    return parser


def main() -> int:
    parser = _arguments()
    args = parser.parse_args()
    for name in ("requests", "episodes", "heads", "left_streams", "floods", "oversized_heads",
                 "concurrency", "deadline", "time_limit"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.slowloris < 0:
        parser.error("--slowloris must be 0 or more")
    if not 0 < args.warmup <= 1:
        parser.error("--warmup must be above 0 and at most 1")
    if args.url and not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("--url must be a 127.0.0.1 address")
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else "python"
    command = " ".join([python, "benchmarks/soak.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    sizes = Sizes(mix=args.requests, episodes=args.episodes, heads=args.heads,
                  left_streams=args.left_streams, floods=args.floods,
                  oversized_heads=args.oversized_heads, slowloris=args.slowloris)
    soak = dict(sizes=sizes, concurrency=args.concurrency, warmup=args.warmup,
                deadline=args.deadline, time_limit=args.time_limit, seed=args.seed)
    try:
        if args.url:
            rss = stack_rss(processes_under(args.service_pid)) if args.service_pid else None
            report = run_soak(args.url, rss, **soak)
        else:
            report = _soak_own_stack(args, soak)
    except KeyboardInterrupt:
        print("soak interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:  # the stack did not start (its log says why), or no /metrics
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_report(report, command))
    return 1 if report.failures() else 0


def _soak_own_stack(args, soak: dict) -> SoakReport:
    from pokegen.service_stack import ServiceStack

    settings = dict(GENERATION_CONCURRENCY=args.generation_concurrency,
                    QUEUE_SIZE=args.queue_size, RATE_LIMIT=args.rate_limit,
                    RATE_BURST=2 * args.rate_limit,
                    # One address stands for every simulated user.
                    CONNECTION_LIMIT=1000, CLIENT_GENERATION_LIMIT=1000)
    if args.checkpoint_dir:
        settings["CHECKPOINT_DIR"] = os.path.abspath(args.checkpoint_dir)
        settings["RUN_NAME"] = args.run_name
    print("starting the stack (scripts/serve.sh) ...", file=sys.stderr, flush=True)
    stack = ServiceStack(**settings).start()
    try:
        print(f"soaking {stack.url} ({', '.join(f'{k}={v}' for k, v in settings.items())})",
              file=sys.stderr, flush=True)
        return run_soak(stack.url, stack_rss(stack.server_processes), **soak)
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
