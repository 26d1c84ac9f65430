"""One submitted request as its caller sees it: text pieces while it runs,
a result at the end, and a way to give up on it. Every wait has a deadline.

A request for n episodes streams the pieces of all of them, each with its
choice's index, and ends when the last of them ends.

The scheduler thread writes into it; HTTP threads only read from it.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterator

from .text import cut_to_last_sentence
from .types import Choice, GenerationRequest, GenerationResult

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
        self._choices: list[Choice | None] = [None] * request.n
        self._error: BaseException | None = None
        self._done_callbacks: list[Callable[[], None]] = []
        self._callbacks_lock = threading.Lock()

    # ------------------------------------------------------------ callers
    def indexed_pieces(self, timeout: float = DEFAULT_WAIT_SECONDS) -> Iterator[tuple[int, str]]:
        """(choice index, text) as it is generated; raises Busy when the request
        never got a slot, the engine's error if generation failed, and
        TimeoutError when it has not ended `timeout` seconds after this call."""
        deadline = time.monotonic() + timeout
        while not self._drained:
            try:
                event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("generation still running") from None
            for kind, index, text in self._with_what_is_waiting(event):
                if kind == _PIECE:
                    yield index, text
                else:
                    self._drained = True
        if self._error is not None:
            raise self._error

    def _with_what_is_waiting(self, event):
        """The event and those queued behind it, consecutive pieces of one episode joined:
        a reader that fell behind catches up in one write instead of one per token."""
        events = [event]
        while events[-1][0] == _PIECE:
            try:
                following = self._events.get_nowait()
            except queue.Empty:
                break
            kind, index, text = following
            if kind == _PIECE and index == events[-1][1]:
                events[-1] = (_PIECE, index, events[-1][2] + text)
            else:
                events.append(following)
        return events

    def pieces(self, timeout: float = DEFAULT_WAIT_SECONDS) -> Iterator[str]:
        """The text of a single episode (n=1) as it is generated, as indexed_pieces."""
        if self.request.n != 1:
            raise ValueError("a request for several episodes streams indexed_pieces()")
        for _, text in self.indexed_pieces(timeout):
            yield text

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
    def slots(self) -> int:
        """Sequences it decodes at once: one per episode."""
        return self.request.n

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # ---------------------------------------------------------- scheduler
    def push_piece(self, text: str, index: int = 0) -> None:
        if text:
            self._events.put((_PIECE, index, text))

    def finish(self, result: GenerationResult) -> None:
        self._result = result
        self._end()

    def complete(self, generated: str, tokens: int, reason: str, model: str,
                 index: int = 0) -> None:
        """Ends choice `index` with the answer the request asked for, made from the
        raw text the model wrote: cut to its last full sentence, after the prefix,
        as asked. The generation ends with its last choice."""
        request = self.request
        if request.truncate:
            generated = cut_to_last_sentence(generated)
        text = (request.prefix if request.include_prefix else "") + generated
        self._choices[index] = Choice(text, tokens, reason)
        if any(choice is None for choice in self._choices):
            return
        first = self._choices[0]
        self.finish(GenerationResult(text=first.text, prefix=request.prefix, tokens=first.tokens,
                                     seconds=time.monotonic() - self.submitted_at, model=model,
                                     finish_reason=first.finish_reason,
                                     choices=tuple(self._choices),
                                     prompt_tokens=len(self.prompt)))

    def end_unstarted(self, reason: str, model: str) -> None:
        """Ends a generation that never started: every choice empty."""
        for index in range(self.request.n):
            self.complete("", 0, reason, model, index)

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._end()

    def _end(self) -> None:
        with self._callbacks_lock:
            self._done.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
        self._events.put((_END, 0, None))
        for callback in callbacks:
            callback()
