"""One submitted request as its caller sees it: text pieces while it runs,
a result at the end, and a way to give up on it.

The scheduler thread writes into it; HTTP threads only read from it.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

from .text import cut_to_last_sentence
from .types import GenerationRequest, GenerationResult

_PIECE, _END = "piece", "end"


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

    # ------------------------------------------------------------ callers
    def pieces(self) -> Iterator[str]:
        """Text as it is generated; raises Busy when the request never got a
        slot, or the engine's error if generation failed."""
        while not self._drained:
            kind, value = self._events.get()
            if kind == _PIECE:
                yield value
            else:
                self._drained = True
        if self._error is not None:
            raise self._error

    def result(self, timeout: float | None = None) -> GenerationResult:
        if not self._done.wait(timeout):
            raise TimeoutError("generation still running")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

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
        self._done.set()
        self._events.put((_END, None))

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
        self._done.set()
        self._events.put((_END, None))
