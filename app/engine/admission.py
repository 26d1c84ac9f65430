"""Who may generate now, who waits, and who is turned away at once.

A request that finds a free slot takes it the moment it is submitted (it
does not wait for the scheduler to notice), so "in flight" and "queued" are
exact at every instant. The slot passes straight to the oldest waiting
request when a generation ends.
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
        self._active = 0               # generations holding a slot
        self._ready: deque[Generation] = deque()    # hold a slot, not started yet
        self._waiting: deque[Generation] = deque()  # no slot yet
        self._closed_reason: str | None = None

    def submit(self, generation: Generation, retry_after: int) -> None:
        with self._lock:
            if self._closed_reason is not None:
                raise Busy(self._closed_reason, retry_after)
            if self._active < self.max_active:
                self._active += 1
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

    def release(self) -> None:
        """A slot holder ended: hand its slot to the oldest waiting request."""
        with self._lock:
            if self._waiting:
                self._ready.append(self._waiting.popleft())
                self._lock.notify_all()
            else:
                self._active -= 1

    def remove_stale(self, now: float | None = None) -> tuple[list[Generation], list[Generation]]:
        """Takes out waiting requests whose wait ran out or that were cancelled."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [g for g in self._waiting if not g.cancelled and g.deadline <= now]
            cancelled = [g for g in self._waiting if g.cancelled]
            if expired or cancelled:
                gone = set(map(id, expired + cancelled))
                self._waiting = deque(g for g in self._waiting if id(g) not in gone)
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
