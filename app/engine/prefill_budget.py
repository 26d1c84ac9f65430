"""How many prompt tokens a step may read while other sequences decode.

A prompt token costs a row of the layer matmuls plus attention over every
position before it, so a fixed number of tokens per step stalls the running
streams more and more as a long prefix is read. The budget is set in time
instead: each step may add about one decode step's worth of prompt reading,
so a running stream's tokens come at most about two steps apart. Both costs
are learned from the steps themselves (moving averages), so the bound holds
on any CPU, at any context length, whatever the batch.
"""
from __future__ import annotations

# Weight of the newest step in the moving averages: quick enough to follow a
# prompt whose tokens grow dearer as it is read, slow enough to ride out one
# late step.
SMOOTHING = 0.3


class PrefillBudget:
    def __init__(self, most: int):
        self.most = most            # never more prompt tokens than this per step
        self.decode_step = None     # seconds of a step without prompt tokens
        self.per_token = None       # seconds one prompt token adds to a step

    def tokens(self) -> int:
        """Prompt tokens for the next step that also decodes."""
        if self.decode_step is None or self.per_token is None:
            return 1  # nothing learned yet: the cheapest step that still reads
        if self.per_token <= 0:
            return self.most
        return max(1, min(self.most, int(self.decode_step / self.per_token)))

    def observe(self, seconds: float, prompt_tokens: int) -> None:
        """One step that decoded, with `prompt_tokens` of prompt read beside it."""
        if prompt_tokens == 0:
            self.decode_step = _average(self.decode_step, seconds)
        elif self.decode_step is not None:
            added = max(0.0, seconds - self.decode_step) / prompt_tokens
            self.per_token = _average(self.per_token, added)


def _average(old: float | None, new: float) -> float:
    return new if old is None else old + SMOOTHING * (new - old)
