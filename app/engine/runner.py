"""Running one planned step on the decoder: the scheduler decides, this executes.

A step is a list of segments, each some consecutive tokens of one sequence
(a decoding token and its drafts, or a chunk of a prompt). The int8 decoder
takes them all as rows of one pass over the weights; the TensorFlow graph
takes rectangles, so there decoding rows run as one batch (padded to the
graph's minimum) and each prompt as a call of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cache_pool import CachePool


@dataclass
class Segment:
    sequence: object   # the scheduler's Sequence: .places, the pool place of each position
    tokens: list[int]
    start: int         # position of the first token
    logits: str        # after "all" tokens, the "last" one, or "none"

    @property
    def end(self) -> int:
        """Position of the last token."""
        return self.start + len(self.tokens) - 1


class StepRunner:
    def __init__(self, decoder):
        self.decoder = decoder
        self.ragged = hasattr(decoder, "forward_rows")
        self.n_ctx = decoder.hparams.n_ctx

    def run(self, plan: list[Segment], pool: CachePool) -> list[np.ndarray]:
        """Logits per segment: [len(tokens), V], [1, V] or [0, V] as it asked."""
        if self.ragged:
            return self._run_rows(plan, pool)
        return self._run_rectangles(plan, pool)

    def _run_rows(self, plan: list[Segment], pool: CachePool) -> list[np.ndarray]:
        kv_len = _rounded(max(s.end for s in plan) + 1, pool.page)
        read_at = np.empty((len(plan), kv_len), np.int32)
        tokens, positions, row_seq, output_rows, counts = [], [], [], [], []
        for j, segment in enumerate(plan):
            places = segment.sequence.places
            visible = segment.end + 1
            read_at[j, :visible] = places[:visible]
            read_at[j, visible:] = places[0]  # never read: the rows stop at their own position
            first = len(tokens)
            tokens += segment.tokens
            positions += range(segment.start, segment.end + 1)
            row_seq += [j] * len(segment.tokens)
            wanted = {"all": range(first, len(tokens)), "last": [len(tokens) - 1], "none": []}
            output_rows += wanted[segment.logits]
            counts.append(len(wanted[segment.logits]))
        positions = np.array(positions, np.int32)
        write_at = np.concatenate([s.sequence.places[s.start:s.end + 1] for s in plan])
        logits = self.decoder.forward_rows(np.array(tokens, np.int32), positions, write_at,
                                           np.array(row_seq, np.int32), read_at,
                                           np.array(output_rows, np.int32))
        return np.split(logits, np.cumsum(counts)[:-1])

    def _run_rectangles(self, plan: list[Segment], pool: CachePool) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(plan)
        decoding = [j for j, s in enumerate(plan) if len(s.tokens) == 1 and s.logits == "all"]
        if decoding:
            logits = self._decode_batch([plan[j] for j in decoding], pool)
            for j, row in zip(decoding, logits):
                results[j] = row[None]
        for j, segment in enumerate(plan):
            if results[j] is None:
                results[j] = self._prompt(segment)
        return results

    def _decode_batch(self, segments: list[Segment], pool: CachePool) -> np.ndarray:
        """One token per row. Shapes are chosen so that a row's logits do not
        depend on the rest of the batch where TensorFlow allows it: a kv_len
        rounded up to a whole page (masked reductions then add zeros in whole
        blocks) and, with float32 weights, at least two rows (TensorFlow's
        matmul takes another kernel for a single row). Padding rows write to
        and read from the scratch page only."""
        kv_len = _rounded(max(s.start for s in segments) + 1, pool.page)
        count = max(self.decoder.min_rows, len(segments))
        scratch = pool.scratch_places[0]
        tokens = np.zeros((count, 1), np.int32)
        positions = np.zeros((count, 1), np.int32)
        write_at = np.full((count, 1), scratch, np.int32)
        read_at = np.full((count, kv_len), scratch, np.int32)
        for i, s in enumerate(segments):
            places = s.sequence.places
            tokens[i, 0], positions[i, 0] = s.tokens[0], s.start
            write_at[i, 0] = places[s.start]
            # Past its own position a row is masked; it still reads only a
            # place it has written, so the pool never needs clearing.
            read_at[i, :s.start + 1] = places[:s.start + 1]
            read_at[i, s.start + 1:] = places[0]
        return self.decoder.forward(tokens, positions, write_at, read_at)[:len(segments)]

    def _prompt(self, segment: Segment) -> np.ndarray:
        places = segment.sequence.places
        at = places[None, segment.start:segment.end + 1]
        logits = self.decoder.forward(np.array([segment.tokens], np.int32),
                                      np.arange(segment.start, segment.end + 1, dtype=np.int32)[None],
                                      at, places[None, :segment.end + 1])
        return logits if segment.logits == "last" else logits[:0]


def _rounded(value: int, page: int) -> int:
    return -(-value // page) * page
