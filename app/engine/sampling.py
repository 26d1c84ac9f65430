"""Choosing the next token of one request from its logits.

Each request samples on its own row with its own random generator, in
float64, so its temperature, top_k, top_p and seed never depend on what else
is in the batch.
"""
from __future__ import annotations

import numpy as np


class TokenSampler:
    def __init__(self, temperature: float, top_k: int, top_p: float, seed: int | None,
                 vocab_size: int):
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.vocab_size = vocab_size  # ids past the tokenizer's vocabulary are never chosen
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.asarray(logits[:self.vocab_size], dtype=np.float64)
        # One draw per token whatever the settings, so a seed maps to one stream.
        draw = self.rng.random()
        if self.temperature <= 0 or self.top_k == 1:
            return int(np.argmax(logits))
        candidates = np.arange(logits.size)
        if 0 < self.top_k < logits.size:
            candidates = np.sort(np.argpartition(-logits, self.top_k - 1)[:self.top_k])
        if self.top_p < 1.0:
            # Highest first, ties by id, then keep the smallest head whose
            # mass reaches top_p (always at least one token).
            candidates = candidates[np.lexsort((candidates, -logits[candidates]))]
        # Shifted before dividing: a tiny temperature then sends every other
        # token to exp(-inf) = 0 instead of overflowing to inf - inf = nan.
        shifted = logits[candidates] - logits[candidates].max()
        with np.errstate(over="ignore"):
            probs = np.exp(shifted / self.temperature)
        probs /= probs.sum()
        if self.top_p < 1.0:
            before = np.cumsum(probs) - probs
            keep = int(np.count_nonzero(before < self.top_p))
            candidates, probs = candidates[:keep], probs[:keep]
        index = int(np.searchsorted(np.cumsum(probs), draw * probs.sum(), side="right"))
        return int(candidates[min(index, candidates.size - 1)])
