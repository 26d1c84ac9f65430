"""Repetition control: one request's logits reshaped by the tokens it has seen.

- repetition_penalty (Hugging Face, TGI): every token of the prompt or of the
  text so far has its logit divided by the penalty when positive, multiplied
  when negative.
- frequency_penalty and presence_penalty (OpenAI): a token written c times so
  far (the prompt not counted) loses c * frequency_penalty + presence_penalty.
- no_repeat_ngram_size n (Hugging Face, CTranslate2): a token that would
  complete an n-gram already in the prompt or the text cannot be chosen.

The state grows by one token at a time: a slot per distinct token, and the
tokens seen after each (n-1)-gram, so a step costs the distinct tokens seen,
never the whole vocabulary or the whole history.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np


class RepetitionControl:
    def __init__(self, prompt: list[int], *, repetition_penalty: float = 1.0,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 no_repeat_ngram_size: int = 0):
        self.repetition_penalty = float(repetition_penalty)
        self.frequency_penalty = float(frequency_penalty)
        self.presence_penalty = float(presence_penalty)
        self.ngram = int(no_repeat_ngram_size)
        self.tokens: list[int] = []           # the prompt, then every token chosen
        self._slot: dict[int, int] = {}       # token -> its place in _ids and _written
        self._ids = np.empty(64, np.int64)    # each distinct token seen, by first sight
        self._written = np.zeros(64)          # times each was generated (not in the prompt)
        self._followers: dict[tuple[int, ...], set[int]] = defaultdict(set)  # (n-1)-gram -> next
        for token in prompt:
            self._see(token)

    @classmethod
    def for_request(cls, request, prompt: list[int]) -> RepetitionControl | None:
        """The control a GenerationRequest asks for, None when it asks for none."""
        if (request.repetition_penalty == 1.0 and request.frequency_penalty == 0.0
                and request.presence_penalty == 0.0 and request.no_repeat_ngram_size == 0):
            return None
        return cls(prompt, repetition_penalty=request.repetition_penalty,
                   frequency_penalty=request.frequency_penalty,
                   presence_penalty=request.presence_penalty,
                   no_repeat_ngram_size=request.no_repeat_ngram_size)

    def apply(self, logits: np.ndarray) -> None:
        """Reshapes one row of float64 logits in place."""
        ids = self._ids[:len(self._slot)]
        if self.repetition_penalty != 1.0 and ids.size:
            seen = logits[ids]
            logits[ids] = np.where(seen > 0, seen / self.repetition_penalty,
                                   seen * self.repetition_penalty)
        if self.frequency_penalty or self.presence_penalty:
            written = self._written[:ids.size]
            logits[ids] -= written * self.frequency_penalty + (written > 0) * self.presence_penalty
        if self.ngram:
            banned = self._followers.get(self._tail())
            # Never every token: a row with nothing left to choose has no answer.
            if banned and len(banned) < logits.size:
                logits[list(banned)] = -np.inf

    def append(self, token: int) -> None:
        """Counts a generated token."""
        slot = self._see(token)  # first: it may grow the arrays
        self._written[slot] += 1

    def _see(self, token: int) -> int:
        if self.ngram and len(self.tokens) >= self.ngram - 1:
            self._followers[self._tail()].add(token)
        self.tokens.append(token)
        slot = self._slot.get(token)
        if slot is None:
            slot = self._slot[token] = len(self._slot)
            if slot == self._ids.size:
                self._ids = np.concatenate([self._ids, np.empty_like(self._ids)])
                self._written = np.concatenate([self._written, np.zeros_like(self._written)])
            self._ids[slot] = token
        return slot

    def _tail(self) -> tuple[int, ...]:
        """The last n-1 tokens: the start of the n-gram the next token would end."""
        return tuple(self.tokens[len(self.tokens) - self.ngram + 1:])
