"""One submitted request as its caller sees it: text pieces while it runs,
a result at the end, and a way to give up on it. Every wait has a deadline.

The scheduler thread writes into it; HTTP threads only read from it.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterator

from .text import cut_to_last_sentence
from .types import GenerationRequest, GenerationResult

_PIECE, _END = "piece", "end"
# Callers that know their deadline pass it; the others still never wait forever.
DEFAULT_WAIT_SECONDS = 3600.0


class Generation:
    def __init__(self, request: GenerationRequest, prompt: list[int], queue_timeout: float):
        self.request = request
        self.prompt = prompt
        self.submitted_at = time.monotonic()
        self.deadline = self.submitted_at + queue_timeout
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self._drained = False
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        self._done_callbacks: list[Callable[[], None]] = []
        self._callbacks_lock = threading.Lock()

    # ------------------------------------------------------------ callers
    def pieces(self, timeout: float = DEFAULT_WAIT_SECONDS) -> Iterator[str]:
        """Text as it is generated; raises Busy when the request never got a
        slot, the engine's error if generation failed, and TimeoutError when
        it has not ended `timeout` seconds after this call."""
        deadline = time.monotonic() + timeout
        while not self._drained:
            try:
                kind, value = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("generation still running") from None
            if kind == _PIECE:
                yield value
            else:
                self._drained = True
        if self._error is not None:
            raise self._error

    def result(self, timeout: float = DEFAULT_WAIT_SECONDS) -> GenerationResult:
        if not self._done.wait(timeout):
            raise TimeoutError("generation still running")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def on_done(self, callback: Callable[[], None]) -> None:
        """Calls `callback` once, when the generation ends (at once if it has)."""
        with self._callbacks_lock:
            if not self._done.is_set():
                self._done_callbacks.append(callback)
                return
        callback()

    def cancel(self) -> None:
        """The caller went away: the engine frees its slot at the next step."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # ---------------------------------------------------------- scheduler
    def push_piece(self, text: str) -> None:
        if text:
            self._events.put((_PIECE, text))

    def finish(self, result: GenerationResult) -> None:
        self._result = result
        self._end()

    def complete(self, generated: str, tokens: int, reason: str, model: str) -> None:
        """Ends with the answer the request asked for, made from the raw text the
        model wrote: cut to its last full sentence, after the prefix, as asked."""
        request = self.request
        if request.truncate:
            generated = cut_to_last_sentence(generated)
        text = (request.prefix if request.include_prefix else "") + generated
        self.finish(GenerationResult(text=text, prefix=request.prefix, tokens=tokens,
                                     seconds=time.monotonic() - self.submitted_at, model=model,
                                     finish_reason=reason))

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._end()

    def _end(self) -> None:
        with self._callbacks_lock:
            self._done.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
        self._events.put((_END, None))
        for callback in callbacks:
            callback()
