"""Ending a generation at a stop string, matched on the decoded text.

A stop string may span several tokens (the episode delimiter written as text
is `<|`, `endoftext`, `|>`), so text is held back from the stream while it
could still be the beginning of one: no stop string, nor a piece of one, ever
reaches the caller.
"""
from __future__ import annotations


class StopStrings:
    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.held = ""  # text that may be the start of a stop string

    def feed(self, piece: str) -> tuple[str, bool]:
        """The text that can be shown now, and whether a stop string has ended the text
        (it and everything after it are dropped)."""
        text = self.held + piece
        ends = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if ends:
            self.held = ""
            return text[:min(ends)], True
        keep = self._longest_start(text)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep], False

    def flush(self) -> str:
        """What was held back, when the text ends for another reason."""
        held, self.held = self.held, ""
        return held

    def _longest_start(self, text: str) -> int:
        """Length of the longest end of `text` that some stop string begins with."""
        for size in range(min(len(text), max((len(s) for s in self.stops), default=0) - 1), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0
