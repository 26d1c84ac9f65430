"""Every request from its submission until its last sequence ends: the one
owner of who may generate, who waits, and who is turned away at once.

A slot is one sequence decoded in the batch: a request for n episodes holds n.
Requests not started yet stand in one line, oldest first. The head of the line
holds slots (admitted: the scheduler starts them when the cache has room); the
rest waits for slots. A request that finds slots free and nobody waiting takes
them the moment it is submitted, so "in flight" and "queued" are exact at every
instant, and slots that free up pass to the oldest waiting request in order: a
request for several episodes is never overtaken.

Slots come back in one place, `_give_back`: when a started sequence ends, or
when a request leaves the line unstarted (cancelled, timed out, shut down).
Each client holds at most `max_per_client` slots, running or waiting, until
its request ends.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from .generation import Generation
from .types import Busy, ClientBusy


class RequestLine:
    def __init__(self, max_active: int, max_waiting: int, max_per_client: int | None = None):
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.max_per_client = max_per_client
        self._lock = threading.Condition()
        self._line: deque[Generation] = deque()  # not started, oldest first
        self._admitted = 0   # how many at the head of the line hold their slots
        self._active = 0     # slots held: by admitted requests and running sequences
        self._per_client: dict[str, int] = {}  # client -> slots held or waited for
        self._closed_reason: str | None = None

    # ------------------------------------------------------- HTTP threads
    def check(self, client: str | None, slots: int, retry_after: int) -> None:
        """Raises what submit() would raise for lack of room now; cheap (a hint:
        room may change before the submit)."""
        with self._lock:
            self._check(client, slots, retry_after)
            if self._active >= self.max_active and self.queued >= self.max_waiting:
                raise Busy(self.full_reason(), retry_after)

    def submit(self, generation: Generation, client: str | None, retry_after: int) -> None:
        with self._lock:
            self._check(client, generation.slots, retry_after)
            if self.queued == 0 and self._active + generation.slots <= self.max_active:
                self._active += generation.slots
                self._admitted += 1
            elif self.queued >= self.max_waiting:
                raise Busy(self.full_reason(), retry_after)
            self._line.append(generation)
            self._hold_for_client(client, generation)
            self._lock.notify_all()

    def _check(self, client: str | None, slots: int, retry_after: int) -> None:
        if self._closed_reason is not None:
            raise Busy(self._closed_reason, retry_after)
        if client is None or self.max_per_client is None:
            return
        held = self._per_client.get(client, 0)
        if held + slots > self.max_per_client:
            raise ClientBusy(f"this client already has {held} generations running or waiting; "
                             f"at most {self.max_per_client} at once", retry_after)

    def _hold_for_client(self, client: str | None, generation: Generation) -> None:
        if client is None or self.max_per_client is None:
            return
        slots = generation.slots
        self._per_client[client] = self._per_client.get(client, 0) + slots

        def give_back():
            with self._lock:
                left = self._per_client.pop(client) - slots
                if left:
                    self._per_client[client] = left
        generation.on_done(give_back)

    def full_reason(self) -> str:
        return (self._closed_reason or f"all {self.max_active} generation slots are busy and "
                                       f"{self.max_waiting} requests already wait")

    def close(self, reason: str) -> list[Generation]:
        """Refuses new requests; takes out and returns those still waiting for
        slots (the admitted ones still start)."""
        with self._lock:
            self._closed_reason = reason
            waiting = self._waiting()
            for generation in waiting:
                self._line.remove(generation)
            self._lock.notify_all()
            return waiting

    # --------------------------------------------------- scheduler thread
    def next_admitted(self) -> Generation | None:
        """The oldest request holding slots that has not started."""
        with self._lock:
            return self._line[0] if self._admitted else None

    def started(self, generation: Generation) -> None:
        """The admitted head now runs as sequences; they keep its slots."""
        with self._lock:
            assert self._admitted and self._line[0] is generation
            self._line.popleft()
            self._admitted -= 1

    def sequence_ended(self) -> None:
        """A started sequence ended: its slot passes on."""
        with self._lock:
            self._give_back(1)

    def take_stale(self, now: float | None = None) -> tuple[list[Generation], list[Generation]]:
        """Takes out of the line the cancelled requests, and the waiting ones
        whose wait ran out: (expired, cancelled)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [g for g in self._waiting() if not g.cancelled and g.deadline <= now]
            cancelled = [g for g in self._line if g.cancelled]
            for generation in expired + cancelled:
                self._take_out(generation)
            return expired, cancelled

    def take_all(self) -> list[Generation]:
        """Takes every unstarted request out of the line (shutting down)."""
        with self._lock:
            taken = list(self._line)
            for generation in taken:
                self._take_out(generation)
            return taken

    def _take_out(self, generation: Generation) -> None:
        admitted = self._line.index(generation) < self._admitted
        self._line.remove(generation)
        if admitted:
            self._admitted -= 1
            self._give_back(generation.slots)
        else:
            self._admit_waiting()  # the head that left may have held back smaller ones

    def _waiting(self) -> list[Generation]:
        """The requests in line without slots, oldest first."""
        return list(self._line)[self._admitted:]

    def _give_back(self, slots: int) -> None:
        self._active -= slots
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self.queued and self._active + self._line[self._admitted].slots <= self.max_active:
            self._active += self._line[self._admitted].slots
            self._admitted += 1
            self._lock.notify_all()

    def next_deadline(self) -> float | None:
        with self._lock:
            return min((g.deadline for g in self._waiting()), default=None)

    def wait_for_work(self, timeout: float) -> None:
        with self._lock:
            if not self._admitted and self._closed_reason is None:
                self._lock.wait(timeout)

    # ----------------------------------------------------------- counts
    @property
    def in_flight(self) -> int:
        """Slots held, by running sequences and admitted requests."""
        return self._active

    @property
    def queued(self) -> int:
        """Requests waiting for slots."""
        return len(self._line) - self._admitted

    def per_client(self) -> dict[str, int]:
        with self._lock:
            return dict(self._per_client)
