"""Who may generate now, who waits, and who is turned away at once.

A slot is one sequence decoded in the batch: a request for n episodes holds n.
A request that finds its slots free takes them the moment it is submitted (it
does not wait for the scheduler to notice), so "in flight" and "queued" are
exact at every instant. Slots that free up pass straight to the oldest waiting
request, in order: a request for several episodes is never overtaken.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from .generation import Generation
from .types import Busy


class GenerationQueue:
    def __init__(self, max_active: int, max_waiting: int):
        self.max_active = max_active
        self.max_waiting = max_waiting
        self._lock = threading.Condition()
        self._active = 0               # slots held by running or ready generations
        self._ready: deque[Generation] = deque()    # hold a slot, not started yet
        self._waiting: deque[Generation] = deque()  # no slot yet
        self._closed_reason: str | None = None

    def submit(self, generation: Generation, retry_after: int) -> None:
        with self._lock:
            if self._closed_reason is not None:
                raise Busy(self._closed_reason, retry_after)
            if not self._waiting and self._active + generation.slots <= self.max_active:
                self._active += generation.slots
                self._ready.append(generation)
            elif len(self._waiting) < self.max_waiting:
                self._waiting.append(generation)
            else:
                raise Busy(self.full_reason(), retry_after)
            self._lock.notify_all()

    def has_room(self) -> bool:
        """Whether submit() would take one more request now (a hint: it may change)."""
        with self._lock:
            return (self._closed_reason is None
                    and (self._active < self.max_active or len(self._waiting) < self.max_waiting))

    def full_reason(self) -> str:
        return (self._closed_reason or f"all {self.max_active} generation slots are busy and "
                                       f"{self.max_waiting} requests already wait")

    def take_ready(self) -> list[Generation]:
        with self._lock:
            taken = list(self._ready)
            self._ready.clear()
            return taken

    def release(self, slots: int = 1) -> None:
        """Sequences ended: hand their slots on to the oldest waiting requests."""
        with self._lock:
            self._active -= slots
            self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self._waiting and self._active + self._waiting[0].slots <= self.max_active:
            generation = self._waiting.popleft()
            self._active += generation.slots
            self._ready.append(generation)
            self._lock.notify_all()

    def remove_stale(self, now: float | None = None) -> tuple[list[Generation], list[Generation]]:
        """Takes out waiting requests whose wait ran out or that were cancelled."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [g for g in self._waiting if not g.cancelled and g.deadline <= now]
            cancelled = [g for g in self._waiting if g.cancelled]
            if expired or cancelled:
                gone = set(map(id, expired + cancelled))
                self._waiting = deque(g for g in self._waiting if id(g) not in gone)
                self._admit_waiting()  # the head that left may have held back smaller ones
            return expired, cancelled

    def next_deadline(self) -> float | None:
        with self._lock:
            return min((g.deadline for g in self._waiting), default=None)

    def wait_for_work(self, timeout: float) -> None:
        with self._lock:
            if not self._ready and self._closed_reason is None:
                self._lock.wait(timeout)

    def close(self, reason: str) -> list[Generation]:
        """Refuses new requests; returns the ones that were still waiting."""
        with self._lock:
            self._closed_reason = reason
            waiting = list(self._waiting)
            self._waiting.clear()
            self._lock.notify_all()
            return waiting

    @property
    def in_flight(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return len(self._waiting)
