"""Choosing the next token of one request from its logits.

Each request samples on its own row with its own random generator, in
float64, so its temperature, top_k, top_p, repetition control and seed never
depend on what else is in the batch.
"""
from __future__ import annotations

import numpy as np

from .repetition import RepetitionControl

# top_p without top_k: the likeliest tokens are sorted in a head this big, grown
# fourfold until it holds the mass asked for; past a quarter of the vocabulary
# one sort of everything is cheaper.
FIRST_NUCLEUS_HEAD = 64
# top_k looks for its tokens among the blocks whose maxima are among the k
# largest: a few hundred candidates instead of the whole vocabulary.
TOP_K_BLOCK = 128


class TokenSampler:
    def __init__(self, temperature: float, top_k: int, top_p: float, seed: int | None,
                 vocab_size: int, repetition: RepetitionControl | None = None):
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.vocab_size = vocab_size  # ids past the tokenizer's vocabulary are never chosen
        self.rng = np.random.default_rng(seed)
        self.repetition = repetition  # sees every token this sampler returns

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.array(logits[:self.vocab_size], dtype=np.float64)  # a copy to reshape
        # One draw per token whatever the settings, so a seed maps to one stream.
        draw = self.rng.random()
        if self.repetition is not None:
            self.repetition.apply(logits)
        token = self._choose(logits, draw)
        if self.repetition is not None:
            self.repetition.append(token)
        return token

    def _choose(self, logits: np.ndarray, draw: float) -> int:
        if self.temperature <= 0 or self.top_k == 1:
            return int(np.argmax(logits))
        if self.top_p < 1.0 and not 0 < self.top_k < logits.size:
            return self._nucleus(logits, draw)
        candidates = np.arange(logits.size)
        if 0 < self.top_k < logits.size:
            candidates = top_k_ids(logits, self.top_k)
        if self.top_p < 1.0:
            # Highest first, ties by id, then keep the smallest head whose
            # mass reaches top_p (always at least one token).
            candidates = candidates[np.lexsort((candidates, -logits[candidates]))]
        probs = self._probabilities(logits[candidates])
        if self.top_p < 1.0:
            before = np.cumsum(probs) - probs
            keep = int(np.count_nonzero(before < self.top_p))
            candidates, probs = candidates[:keep], probs[:keep]
        return _pick(candidates, probs, draw)

    def _nucleus(self, logits: np.ndarray, draw: float) -> int:
        """top_p over the whole vocabulary, sorting only the head that holds its
        mass: the same tokens, in the same order, as sorting everything."""
        probs = self._probabilities(logits)
        head = FIRST_NUCLEUS_HEAD
        while True:
            if head * 4 >= logits.size:
                ids = np.arange(logits.size)
            else:
                # Every token at least as likely as the head's last, ties included;
                # sorted only once their mass (summed unsorted, cheaply) is enough.
                threshold = np.partition(logits, logits.size - head)[logits.size - head]
                ids = np.flatnonzero(logits >= threshold)
                if probs[ids].sum() < self.top_p:
                    head *= 4
                    continue
            ids = ids[np.lexsort((ids, -logits[ids]))]
            cumulative = np.cumsum(probs[ids])
            if cumulative[-1] >= self.top_p or ids.size == logits.size:
                break
            head *= 4  # short by rounding only
        keep = int(np.count_nonzero(cumulative - probs[ids] < self.top_p))
        return _pick(ids[:keep], probs[ids[:keep]], draw)

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        # Shifted before dividing: a tiny temperature then sends every other
        # token to exp(-inf) = 0 instead of overflowing to inf - inf = nan.
        shifted = logits - logits.max()
        with np.errstate(over="ignore"):
            probs = np.exp(shifted / self.temperature)
        return probs / probs.sum()


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest logits, ascending; of the tokens tied with the
    k-th, the lowest ids. The k-th largest block maximum is at most the k-th
    largest logit (those k maxima are k distinct logits at least as large), so
    only the logits that reach it need searching."""
    usable = logits.size - logits.size % TOP_K_BLOCK
    maxima = logits[:usable].reshape(-1, TOP_K_BLOCK).max(axis=1)
    if usable < logits.size:
        maxima = np.append(maxima, logits[usable:].max())
    ids = np.arange(logits.size)
    if maxima.size >= k:
        ids = np.flatnonzero(logits >= np.partition(maxima, maxima.size - k)[maxima.size - k])
    values = logits[ids]
    kth = np.partition(values, values.size - k)[values.size - k]
    above = ids[values > kth]
    return np.sort(np.concatenate([above, ids[values == kth][:k - above.size]]))


def _pick(candidates: np.ndarray, probs: np.ndarray, draw: float) -> int:
    index = int(np.searchsorted(np.cumsum(probs), draw * probs.sum(), side="right"))
    return int(candidates[min(index, candidates.size - 1)])
