"""The client side of benchmarks/service_speed.py: episodes requested through
nginx, a fixed number of them at a time, each timed from the request to its
first streamed token and to its last byte; and the service's memory, read
while they run.
"""
from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

import requests

DEFAULT_PREFIX = "Pikachu and Ash were"


@dataclass
class Episode:
    """One request's outcome. tokens is what the service says it generated."""
    seconds: float
    tokens: int = 0
    first_token: Optional[float] = None  # /stream only
    error: Optional[str] = None


@dataclass
class Round:
    """Requests sent `concurrency` at a time, each one sent as soon as a slot frees."""
    concurrency: int
    length: int
    episodes: list
    wall_seconds: float
    rss_peak: int = 0  # bytes, highest reading while they ran
    rss_end: int = 0

    @property
    def failed(self) -> list:
        return [e for e in self.episodes if e.error]

    @property
    def short(self) -> list:
        """Answered, but with fewer tokens than asked (the model wrote end-of-text)."""
        return [e for e in self.episodes if not e.error and e.tokens < self.length]

    @property
    def tokens_per_second(self) -> float:
        return sum(e.tokens for e in self.episodes) / self.wall_seconds

    def latency(self) -> dict:
        """Percentiles of full-length episodes only: a short one is not an episode's time."""
        return percentiles([e.seconds for e in self.episodes
                            if not e.error and e.tokens >= self.length])

    def first_token(self) -> dict:
        return percentiles([e.first_token for e in self.episodes if e.first_token is not None])


def percentiles(values: list) -> dict:
    values = sorted(values)
    if not values:
        return {"p50": math.nan, "p95": math.nan, "max": math.nan}

    def at(fraction):  # nearest rank
        return values[max(0, math.ceil(fraction * len(values)) - 1)]
    return {"p50": at(0.50), "p95": at(0.95), "max": values[-1]}


def event_stream_lines(response: requests.Response):
    """The lines of a text/event-stream response as they arrive. Lines end only at
    CR or LF there: bytes' splitting, not str's, which also splits at characters
    such as U+2028 that an episode's text may hold."""
    for raw in response.iter_lines():
        yield raw.decode("utf-8")


def stream_episode(url: str, length: int, seed: int, timeout: float = 600.0) -> Episode:
    """GET /stream: time to the first `piece` event and to the final `done` event."""
    started = time.perf_counter()
    params = {"prefix": DEFAULT_PREFIX, "length": length, "seed": seed}
    first = None
    try:
        with requests.get(url + "/stream", params=params, stream=True, timeout=timeout) as answer:
            if answer.status_code != 200:
                return Episode(time.perf_counter() - started, error=_reason(answer))
            event = None
            for line in event_stream_lines(answer):
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: "):
                    if event == "piece" and first is None:
                        first = time.perf_counter() - started
                    elif event == "done":
                        done = json.loads(line[len("data: "):])
                        return Episode(time.perf_counter() - started, int(done["tokens"]), first)
                    elif event == "error":
                        return Episode(time.perf_counter() - started, first_token=first,
                                       error=line[len("data: "):])
    except requests.RequestException as error:
        return Episode(time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
    return Episode(time.perf_counter() - started, first_token=first,
                   error="the stream ended without a done event")


def json_episode(url: str, length: int, seed: int, timeout: float = 600.0) -> Episode:
    """GET /: the article's API, one JSON answer at the end."""
    started = time.perf_counter()
    params = {"prefix": DEFAULT_PREFIX, "length": length, "seed": seed}
    try:
        answer = requests.get(url + "/", params=params, timeout=timeout)
    except requests.RequestException as error:
        return Episode(time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - started
    if answer.status_code != 200:
        return Episode(seconds, error=_reason(answer))
    return Episode(seconds, int(answer.json()["tokens"]))


def _reason(answer: requests.Response) -> str:
    return f"HTTP {answer.status_code}: {answer.text[:200].strip()}"


class PeakSampler:
    """Reads `read()` every `interval` seconds in a thread and keeps the highest."""

    def __init__(self, read: Callable[[], int], interval: float = 0.5):
        self.read, self.interval, self.peak = read, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.peak = max(self.peak, self.read())
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_round(url: str, *, concurrency: int, requests_count: int, length: int, first_seed: int,
              episode: Callable = stream_episode, rss: Callable[[], int] = lambda: 0) -> Round:
    """`requests_count` episodes, `concurrency` in flight at once, seeds first_seed, +1, ..."""
    started = time.perf_counter()
    with PeakSampler(rss) as sampler, ThreadPoolExecutor(concurrency) as pool:
        episodes = list(pool.map(lambda i: episode(url, length, first_seed + i),
                                 range(requests_count)))
    wall = time.perf_counter() - started
    end = rss()
    return Round(concurrency, length, episodes, wall, rss_peak=max(sampler.peak, end), rss_end=end)


@dataclass
class ServiceMemory:
    """Resident memory of the service's processes (uWSGI master and workers,
    nginx master and workers), summed from /proc."""
    list_processes: Callable[[], list]  # psutil processes, listed afresh each reading
    by_name: dict = field(default_factory=dict)

    def __call__(self) -> int:
        import psutil

        total, by_name = 0, {}
        for process in self.list_processes():
            try:
                rss = process.memory_info().rss
                name = process.name()
            except psutil.NoSuchProcess:
                continue  # ended between the listing and the reading
            total += rss
            by_name[name] = by_name.get(name, 0) + rss
        self.by_name = by_name
        return total
