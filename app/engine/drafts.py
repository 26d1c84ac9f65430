"""Draft tokens for speculative decoding, looked up in the sequence's own text.

An episode repeats its names, moves and turns of phrase, so the tokens that
followed the last time the latest few tokens appeared are a cheap guess at
what comes next ("prompt lookup"). The model checks a guess in the same pass
that computes the next token, so a wrong one costs a row of work, never a
different answer.
"""
from __future__ import annotations


class PromptLookup:
    """Indexes every n-gram (n = min_ngram..max_ngram) of a growing token list
    by where it last ended, and proposes what followed the latest earlier
    occurrence of the list's tail, longest match first."""

    def __init__(self, tokens: list[int], max_ngram: int = 3, min_ngram: int = 2):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("1 <= min_ngram <= max_ngram is required")
        self.sizes = range(max_ngram, min_ngram - 1, -1)
        self.tokens: list[int] = []
        self._last_end: dict[tuple[int, ...], int] = {}  # n-gram -> index just past it
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        # The n-grams that end where the new token starts now have a known continuation.
        end = len(self.tokens)
        for n in self.sizes:
            if end >= n:
                self._last_end[tuple(self.tokens[end - n:end])] = end
        self.tokens.append(token)

    def propose(self, count: int) -> list[int]:
        """Up to `count` tokens that followed the longest earlier match of the tail."""
        if count <= 0:
            return []
        for n in self.sizes:
            if len(self.tokens) >= n:
                start = self._last_end.get(tuple(self.tokens[-n:]))
                if start is not None:
                    return self.tokens[start:start + count]
        return []
