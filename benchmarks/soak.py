"""Soak test of the real service: N requests at C concurrent through nginx ->
uWSGI -> engine on 127.0.0.1, valid generations and hostile input mixed
(see soak_requests.py). It checks that every request is answered within its
deadline and keeps the rules (no 5xx but 503 with Retry-After, every refusal
a JSON reason), and that the service's memory (uWSGI master and worker,
nginx master and worker) at the end is within 5% of what it was after the
warm-up. It prints the figures and the command that reruns it.

    python benchmarks/soak.py                        # 1,000 requests at 16, its own stack
    python benchmarks/soak.py --requests 150 --concurrency 8
    python benchmarks/soak.py --url http://127.0.0.1:5000 --service-pid PID   # a running stack

By default it starts scripts/serve.sh (as `make serve` does) on a free port
over a freshly initialised tiny model, so that a run takes minutes; the
requests ask for a few tokens each. One client address stands for many users
here, so the stack it starts allows that address --rate-limit requests a
second (the limiter has its own tests).
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

from benchmarks.soak_requests import OVERLOADED, Probe, problem_with, request_mix
from benchmarks.speed_client import PeakSampler

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

RSS_TOLERANCE = 0.05


@dataclass
class Outcome:
    probe: Probe
    status: Optional[int]  # None: no answer
    seconds: float
    problem: Optional[str]


@dataclass
class SoakReport:
    requests: int
    concurrency: int
    warmup: int
    deadline: float
    wall_seconds: float
    statuses: Counter            # status (or "no answer") -> count
    latency: dict                # "p50", "p95", "max" over every answer
    generation_latency: dict     # the same over generations answered 200
    refusal_latency: dict        # the same over 4xx answers
    rss_start: Optional[int]     # bytes, after the warm-up
    rss_end: Optional[int]
    rss_peak: Optional[int]
    problems: list = field(default_factory=list)  # answers that broke a rule

    @property
    def rss_change(self) -> Optional[float]:
        if not self.rss_start or self.rss_end is None:
            return None
        return self.rss_end / self.rss_start - 1

    def failures(self) -> list[str]:
        failed = []
        unanswered = self.statuses.get("no answer", 0)
        if unanswered:
            failed.append(f"{unanswered} requests got no answer within {self.deadline:g} s")
        if self.problems:
            failed.append(f"{len(self.problems)} answers broke a rule, e.g. {self.problems[0]}")
        if self.rss_change is not None and self.rss_change > RSS_TOLERANCE:
            failed.append(f"service RSS grew {self.rss_change:+.1%} (more than "
                          f"{RSS_TOLERANCE:.0%}) after the warm-up")
        return failed


# ------------------------------------------------------------- sending

async def _send_one(session, base_url: str, probe: Probe, deadline: float) -> Outcome:
    import aiohttp
    from yarl import URL

    started = time.monotonic()
    try:
        async with session.request(probe.method, URL(base_url + probe.target, encoded=True),
                                   data=probe.body, headers={"Accept": "*/*"}) as response:
            body = await response.read()
            return Outcome(probe, response.status, time.monotonic() - started,
                           problem_with(probe, response.status, response.headers, body))
    except asyncio.TimeoutError:
        return Outcome(probe, None, time.monotonic() - started,
                       f"{probe.method} {probe.target[:80]}: no answer within {deadline:g} s")
    except aiohttp.ClientError as error:
        return Outcome(probe, None, time.monotonic() - started,
                       f"{probe.method} {probe.target[:80]}: {type(error).__name__}: {error}")


async def _send_all(base_url: str, probes: list[Probe], concurrency: int, deadline: float,
                    time_limit: float) -> list[Outcome]:
    import aiohttp

    outcomes: list[Optional[Outcome]] = [None] * len(probes)
    pending = iter(enumerate(probes))  # shared by the clients: each takes the next one
    timeout = aiohttp.ClientTimeout(total=deadline)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def client():
            for index, probe in pending:
                outcomes[index] = await _send_one(session, base_url, probe, deadline)

        clients = [asyncio.create_task(client()) for _ in range(concurrency)]
        _, unfinished = await asyncio.wait(clients, timeout=time_limit)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
    return [outcome or Outcome(probe, None, math.nan,
                               f"{probe.method} {probe.target[:80]}: not answered within the "
                               f"run's time limit of {time_limit:g} s")
            for outcome, probe in zip(outcomes, probes)]


def send_requests(base_url: str, probes: list[Probe], *, concurrency: int = 16,
                  deadline: float = 60.0, time_limit: float = 900.0) -> list[Outcome]:
    """Sends every probe, `concurrency` at a time; each gets `deadline` seconds,
    the whole run `time_limit`."""
    return asyncio.run(_send_all(base_url.rstrip("/"), probes, concurrency, deadline,
                                 time_limit))


# ------------------------------------------------------------- measuring

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


def percentiles(values: list[float]) -> dict:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return {"p50": math.nan, "p95": math.nan, "max": math.nan}

    def at(fraction):
        return values[min(len(values) - 1, math.ceil(fraction * len(values)) - 1)]
    return {"p50": at(0.50), "p95": at(0.95), "max": values[-1]}


# ------------------------------------------------------------- the run

def run_soak(base_url: str, rss: Optional[Callable[[], int]] = None, *, requests: int = 1000,
             concurrency: int = 16, warmup: int = 100, deadline: float = 60.0,
             time_limit: float = 900.0, seed: int = 1) -> SoakReport:
    """Warm-up, then the measured run. `rss()` reads the service's memory (or None)."""
    options = dict(concurrency=concurrency, deadline=deadline, time_limit=time_limit)
    warm = send_requests(base_url, request_mix(warmup, seed + 1_000_000), **options)
    rss_start = rss() if rss else None
    started = time.monotonic()
    with PeakSampler(rss or (lambda: 0), interval=1.0) as sampler:
        outcomes = send_requests(base_url, request_mix(requests, seed), **options)
    wall = time.monotonic() - started
    rss_end = rss() if rss else None
    statuses = Counter(o.status if o.status is not None else "no answer" for o in outcomes)
    generated = [o.seconds for o in outcomes
                 if o.status == 200 and o.probe.kind in ("generate", "jsonp", "stream")]
    return SoakReport(
        requests=requests, concurrency=concurrency, warmup=warmup, deadline=deadline,
        wall_seconds=wall, statuses=statuses,
        latency=percentiles([o.seconds for o in outcomes if o.status is not None]),
        generation_latency=percentiles(generated),
        refusal_latency=percentiles([o.seconds for o in outcomes
                                     if o.status is not None and 400 <= o.status < 500]),
        rss_start=rss_start, rss_end=rss_end,
        rss_peak=max(sampler.peak, rss_start or 0, rss_end or 0) if rss else None,
        problems=[o.problem for o in warm + outcomes if o.problem])


def format_report(report: SoakReport, command: str) -> str:
    def mib(value):
        return f"{value / 2**20:.1f} MiB"

    def seconds(figures):
        return ", ".join(f"{name} {value:.3f} s" for name, value in figures.items())

    answered = {k: v for k, v in report.statuses.items() if k != "no answer"}
    by_status = ", ".join(f"{status}: {count}" for status, count in sorted(answered.items()))
    server_errors = {s: n for s, n in answered.items() if s >= 500}
    lines = [
        f"soak: {report.requests} requests at {report.concurrency} concurrent in "
        f"{report.wall_seconds:.1f} s ({report.requests / report.wall_seconds:.1f} requests/s), "
        f"after {report.warmup} warm-up requests",
        f"answers by status: {by_status}; no answer: {report.statuses.get('no answer', 0)}",
        "5xx: " + (", ".join(f"{s}: {n}" for s, n in sorted(server_errors.items())) or "none")
        + f" (only {OVERLOADED} with Retry-After is allowed)",
        f"latency, every answer: {seconds(report.latency)}",
        f"latency, generations answered 200: {seconds(report.generation_latency)}",
        f"latency, refusals (4xx): {seconds(report.refusal_latency)}",
    ]
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Soak the real nginx + uWSGI + engine stack with valid and hostile "
                    "requests; check answers, deadlines and memory.")
    parser.add_argument("--requests", type=int, default=1000, help="requests to send (1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests at once (16)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="requests sent before memory is first read (100)")
    parser.add_argument("--deadline", type=float, default=60.0,
                        help="seconds each request may take (60)")
    parser.add_argument("--time-limit", type=float, default=1800.0,
                        help="seconds the measured run may take in all (1800)")
    parser.add_argument("--seed", type=int, default=1, help="picks the request mix (1)")
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
                        help="QUEUE_SIZE of the stack it starts (16, the default); below "
                             "--concurrency some generations get the intended 503")
    parser.add_argument("--rate-limit", type=int, default=1000,
                        help="requests a second the stack it starts allows this one address "
                             "(1000)")
    args = parser.parse_args()
    for name in ("requests", "concurrency", "deadline", "time_limit"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.url and not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("--url must be a 127.0.0.1 address")
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else "python"
    command = " ".join([python, "benchmarks/soak.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    soak = dict(requests=args.requests, concurrency=args.concurrency, warmup=args.warmup,
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
    except RuntimeError as error:  # the stack did not start: its log says why
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
