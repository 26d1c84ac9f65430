"""The soak's clients, all on one asyncio loop: requests sent a number at a
time, streams left after their first piece, a /healthz probe, slowloris
connections that trickle a request head and never finish it, and the
engine's gauges read from /metrics.
"""
from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field
from typing import Optional

import aiohttp
from yarl import URL

from benchmarks.soak_requests import LIMITED, OVERLOADED, Probe, problem_with

# A refused client asks again after the shortest Retry-After the service gives:
# the load stays past the capacity without spinning on refusals.
REFUSED_PAUSE = 1.0


@dataclass
class Outcome:
    probe: Probe
    status: Optional[int]  # None: no answer
    seconds: float
    problem: Optional[str]


def _where(probe: Probe) -> str:
    return f"{probe.method} {probe.target[:80]}"


def _unanswered(probe: Probe, started: float, error: BaseException, deadline: float) -> Outcome:
    reason = (f"no answer within {deadline:g} s" if isinstance(error, asyncio.TimeoutError)
              else f"{type(error).__name__}: {error}")
    return Outcome(probe, None, time.monotonic() - started, f"{_where(probe)}: {reason}")


def _request(session: aiohttp.ClientSession, base_url: str, probe: Probe):
    return session.request(probe.method, URL(base_url + probe.target, encoded=True),
                           data=probe.body, headers={"Accept": "*/*", **dict(probe.headers)})


async def send_one(session, base_url: str, probe: Probe, deadline: float) -> Outcome:
    started = time.monotonic()
    try:
        async with _request(session, base_url, probe) as response:
            body = await response.read()
            return Outcome(probe, response.status, time.monotonic() - started,
                           problem_with(probe, response.status, response.headers, body))
    except (asyncio.TimeoutError, aiohttp.ClientError) as error:
        return _unanswered(probe, started, error, deadline)


async def leave_a_stream(session, base_url: str, probe: Probe, deadline: float) -> Outcome:
    """Asks for a stream, reads up to its first piece, and drops the connection
    (the closed connection is what the service sees, as with a closed tab)."""
    started = time.monotonic()
    try:
        async with _request(session, base_url, probe) as response:
            if response.status != 200:
                body = await response.read()
                return Outcome(probe, response.status, time.monotonic() - started,
                               problem_with(probe, response.status, response.headers, body))
            async for line in response.content:
                if line.startswith(b"event: piece"):
                    response.close()  # the connection, not just this response
                    return Outcome(probe, 200, time.monotonic() - started, None)
            return Outcome(probe, 200, time.monotonic() - started,
                           f"{_where(probe)}: a stream that ended without a piece")
    except (asyncio.TimeoutError, aiohttp.ClientError) as error:
        return _unanswered(probe, started, error, deadline)


async def send_all(session, base_url: str, probes: list[Probe], *, concurrency: int,
                   deadline: float, time_limit: float, send=send_one) -> list[Outcome]:
    """Every probe, `concurrency` clients at a time, each client sending its
    next one as soon as it has an answer (REFUSED_PAUSE after a 429 or 503).
    Unsent probes when `time_limit` runs out count as unanswered."""
    outcomes: list[Optional[Outcome]] = [None] * len(probes)
    pending = iter(enumerate(probes))  # shared by the clients: each takes the next one

    async def client():
        for index, probe in pending:
            outcomes[index] = outcome = await send(session, base_url, probe, deadline)
            if outcome.status in (LIMITED, OVERLOADED):
                await asyncio.sleep(REFUSED_PAUSE)

    clients = [asyncio.create_task(client()) for _ in range(concurrency)]
    _, unfinished = await asyncio.wait(clients, timeout=time_limit)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    return [outcome or Outcome(probe, None, math.nan,
                               f"{_where(probe)}: not answered within the run's time limit "
                               f"of {time_limit:g} s")
            for outcome, probe in zip(outcomes, probes)]


# ------------------------------------------------------------- the probe

@dataclass
class HealthSample:
    at: float               # time.monotonic() when it was sent
    status: Optional[int]   # None: no answer within the probe's timeout
    seconds: float


async def probe_health(session, base_url: str, samples: list, stop: asyncio.Event,
                       interval: float = 0.2, timeout: float = 10.0) -> None:
    """GET /healthz every `interval` seconds until `stop`, each answer timed."""
    while not stop.is_set():
        started = time.monotonic()
        status = None
        try:
            async with session.get(base_url + "/healthz",
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                await response.read()
                status = response.status
        except (asyncio.TimeoutError, aiohttp.ClientError):
            pass
        samples.append(HealthSample(started, status, time.monotonic() - started))
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass


# ------------------------------------------------------------- slowloris

@dataclass
class Slowloris:
    """Idle connections that trickle a request head, never finishing it; one
    the server drops is opened again at once."""
    sockets: int
    trickle: float = 2.0          # seconds between two header lines
    opened: int = 0
    open_now: int = 0
    most_open: int = 0
    held: list = field(default_factory=list)  # seconds the server kept each one it dropped

    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._one(host, port, stop) for _ in range(self.sockets)))

    async def _one(self, host: str, port: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(self.trickle)
                continue
            opened_at = time.monotonic()
            self.opened += 1
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
            try:
                writer.write(b"GET /?prefix=Ash HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                lines = 0
                while not stop.is_set():
                    try:
                        # Anything read, or the end of the stream: the server let go.
                        await asyncio.wait_for(reader.read(4096), self.trickle)
                        self.held.append(time.monotonic() - opened_at)
                        break
                    except asyncio.TimeoutError:
                        lines += 1
                        writer.write(b"X-Trickle-%d: x\r\n" % lines)
                        await writer.drain()
            except OSError:  # reset by the server
                self.held.append(time.monotonic() - opened_at)
            finally:
                self.open_now -= 1
                writer.close()


# ------------------------------------------------------------- the engine's gauges

IN_FLIGHT = "pokegen_generations_in_flight"
QUEUED = "pokegen_queue_depth"
TOKENS = "pokegen_engine_tokens_generated"


async def engine_gauges(session, base_url: str) -> dict:
    """In-flight generations, queued requests and tokens generated, from /metrics."""
    async with session.get(base_url + "/metrics",
                           timeout=aiohttp.ClientTimeout(total=30)) as response:
        text = await response.text()
    gauges = {}
    for name in (IN_FLIGHT, QUEUED, TOKENS):
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        if not match:
            raise RuntimeError(f"{name} is not in {base_url}/metrics")
        gauges[name] = float(match.group(1))
    return gauges


async def seconds_until_idle(session, base_url: str, timeout: float = 30.0) -> Optional[float]:
    """Seconds until nothing is decoding or queued and the engine's token count
    stands still (two reads 0.2 s apart); None after `timeout`."""
    started = time.monotonic()
    last, last_at = None, started
    while time.monotonic() - started < timeout:
        read_at = time.monotonic()
        gauges = await engine_gauges(session, base_url)
        if gauges[IN_FLIGHT] or gauges[QUEUED]:
            last = None
        elif last is not None and gauges[TOKENS] == last[TOKENS]:
            return last_at - started  # idle since the first of the two reads
        else:
            last, last_at = gauges, read_at
        await asyncio.sleep(0.2)
    return None
