"""The decoding loop: continuous batching over the key/value pool.

One thread owns the TensorFlow session. Each turn it starts the requests that
got a slot (running their prompt alone, which also yields their first
token) as long as the pool has room for them, then advances every running
request by one token in a single batched step. A request leaves the batch as
soon as it is done or cancelled; its slot goes to the next one in the queue
and its pool places to whoever needs them.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .admission import GenerationQueue
from .cache_pool import CachePool
from .generation import Generation
from .graph import DecoderGraph
from .sampling import TokenSampler
from .text import PieceDecoder, Tokenizer, cut_to_last_sentence
from .types import Busy, GenerationResult

log = logging.getLogger("pokegen.engine")


@dataclass
class RunningSequence:
    generation: Generation
    pages: list[int]       # reserved in the pool
    places: np.ndarray     # pool place of each position
    position: int          # position of the next token fed to the model
    last_token: int
    limit: int             # tokens to generate
    sampler: TokenSampler
    decoder: PieceDecoder
    started_at: float
    produced: int = 0
    pieces: list[str] = field(default_factory=list)
    ended: bool = False    # end-of-text sampled


class Scheduler:
    def __init__(self, graph: DecoderGraph, tokenizer: Tokenizer, queue: GenerationQueue,
                 model_name: str, on_finish=None, retry_after=None):
        self.graph = graph
        self.tokenizer = tokenizer
        self.queue = queue
        self.model_name = model_name
        self.on_finish = on_finish or (lambda seconds: None)
        self.retry_after = retry_after or (lambda: 1)
        self.pool = CachePool(graph.pool_size)
        self.starting: deque[Generation] = deque()  # have a slot, wait for pool room
        self.running: list[RunningSequence] = []
        self.stopping = False
        self.stop_deadline = float("inf")

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        while True:
            try:
                if self._turn():
                    return
            except Exception as e:  # never let the loop die: fail what runs, go on
                self._fail_all(e)
                time.sleep(0.05)

    def _turn(self) -> bool:
        """One turn of the loop; True when the loop should end."""
        self._drop_stale_waiting()
        self.starting.extend(self.queue.take_ready())
        if self.stopping and time.monotonic() >= self.stop_deadline:
            for seq in list(self.running):
                self._finish(seq, "shutdown")
            while self.starting:
                self.queue.release()
                self.starting.popleft().fail(Busy("the service is shutting down",
                                                  retry_after=self.retry_after()))
        self._start_what_fits()
        if not self.running:
            if self.stopping and not self.queue.in_flight and not self.starting:
                return True
            self.queue.wait_for_work(self._idle_timeout())
            return False
        self._step()
        return False

    def stop(self, grace: float) -> None:
        self.stop_deadline = time.monotonic() + grace
        self.stopping = True

    def _idle_timeout(self) -> float:
        deadline = self.queue.next_deadline()
        if deadline is None:
            return 0.5
        return min(0.5, max(0.0, deadline - time.monotonic()))

    def _drop_stale_waiting(self) -> None:
        expired, cancelled = self.queue.remove_stale()
        for generation in expired:
            waited = time.monotonic() - generation.submitted_at
            generation.fail(Busy(f"waited {waited:.0f} s for a generation slot",
                                 retry_after=self.retry_after()))
        for generation in cancelled:
            generation.finish(self._result(generation, "", 0, "cancelled"))

    # ------------------------------------------------------------ sequences
    def _start_what_fits(self) -> None:
        """Starts waiting slot holders in order while the pool has room."""
        while self.starting:
            generation = self.starting[0]
            if generation.cancelled:
                self.starting.popleft()
                generation.finish(self._result(generation, "", 0, "cancelled"))
                self.queue.release()
                continue
            prompt, limit = self._plan(generation)
            # Positions fed to the model: the prompt, then each new token but the last.
            reserved = self.pool.reserve(len(prompt) + limit - 1)
            if reserved is None:
                return  # wait for running requests to give places back
            self.starting.popleft()
            self._start(generation, prompt, limit, *reserved)

    def _plan(self, generation: Generation) -> tuple[list[int], int]:
        n_ctx = self.graph.hparams.n_ctx
        limit = max(1, min(generation.request.length, n_ctx - 1))
        # The model sees n_ctx positions: keep the latest prompt tokens that
        # leave room for `limit` new ones.
        return generation.prompt[-(n_ctx - limit):], limit

    def _start(self, generation: Generation, prompt: list[int], limit: int,
               pages: list[int], places: np.ndarray) -> None:
        request = generation.request
        try:
            sampler = TokenSampler(request.temperature, request.top_k, request.top_p, request.seed,
                                   self.tokenizer.vocab_size)
        except (TypeError, ValueError) as e:  # e.g. a seed numpy cannot use
            self.pool.release(pages)
            self.queue.release()
            generation.fail(ValueError(f"bad sampling parameters: {e}"))
            return
        seq = RunningSequence(
            generation=generation, pages=pages, places=places, position=len(prompt),
            last_token=-1, limit=limit, sampler=sampler,
            decoder=PieceDecoder(self.tokenizer), started_at=time.monotonic())
        self.running.append(seq)
        try:
            at = places[None, :len(prompt)]
            logits = self.graph.forward(np.array([prompt], np.int32),
                                        np.arange(len(prompt), dtype=np.int32)[None, :], at, at)
        except Exception as e:  # the session is broken: nothing sensible to retry
            self._fail_all(e)
            return
        self._advance(seq, logits[0])

    def _step(self) -> None:
        for seq in [s for s in self.running if s.generation.cancelled]:
            self._finish(seq, "cancelled")
        if not self.running:
            return
        rows = self.running
        tokens, positions, write_at, read_at = self._batch(rows)
        try:
            logits = self.graph.forward(tokens, positions, write_at, read_at)
        except Exception as e:
            self._fail_all(e)
            return
        for seq in rows:
            seq.position += 1
        for seq, row in zip(list(rows), logits):
            self._advance(seq, row)

    def _batch(self, rows: list[RunningSequence]):
        """Inputs of one decoding step. Padding rows write to and read from
        the scratch page only. Shapes are chosen so that a row's
        logits are bit for bit the same whatever else is in the batch: a
        kv_len rounded up to a whole page (reductions over the positions then
        add masked zeros in whole blocks, which changes no sum) and, with
        float32 weights, at least two rows (TensorFlow's matmul takes another
        kernel for a single row; the packed bfloat16 kernel does not)."""
        page = self.pool.page
        kv_len = -(-(max(s.position for s in rows) + 1) // page) * page
        count = max(self.graph.min_rows, len(rows))
        tokens = np.zeros((count, 1), np.int32)
        positions = np.zeros((count, 1), np.int32)
        scratch = self.pool.scratch * page
        write_at = np.full((count, 1), scratch, np.int32)
        read_at = np.full((count, kv_len), scratch, np.int32)
        for i, s in enumerate(rows):
            tokens[i, 0], positions[i, 0] = s.last_token, s.position
            write_at[i, 0] = s.places[s.position]
            # Past its own position a row is masked; it still reads only a
            # place it has written, so the pool never needs clearing.
            read_at[i, :s.position + 1] = s.places[:s.position + 1]
            read_at[i, s.position + 1:] = s.places[0]
        return tokens, positions, write_at, read_at

    def _advance(self, seq: RunningSequence, logits: np.ndarray) -> None:
        """Samples the sequence's next token and ends it when it is done."""
        token = seq.sampler(logits)
        if token == self.tokenizer.end_of_text and seq.generation.request.stop_at_end:
            seq.ended = True
        else:
            seq.produced += 1
            seq.last_token = token
            piece = seq.decoder.feed(token)
            seq.pieces.append(piece)
            seq.generation.push_piece(piece)
        if seq.ended:
            self._finish(seq, "end_of_text")
        elif seq.produced >= seq.limit:
            self._finish(seq, "length")

    def _finish(self, seq: RunningSequence, reason: str) -> None:
        tail = seq.decoder.flush()
        seq.pieces.append(tail)
        seq.generation.push_piece(tail)
        self._release(seq)
        seconds = time.monotonic() - seq.started_at
        seq.generation.finish(self._result(seq.generation, "".join(seq.pieces), seq.produced, reason))
        self.on_finish(seconds)

    def _release(self, seq: RunningSequence) -> None:
        self.running.remove(seq)
        self.pool.release(seq.pages)
        self.queue.release()

    def _fail_all(self, error: Exception) -> None:
        log.exception("generation step failed")
        for seq in list(self.running):
            self._release(seq)
            seq.generation.fail(RuntimeError(f"generation failed: {error}"))

    def _result(self, generation: Generation, generated: str, tokens: int,
                reason: str) -> GenerationResult:
        request = generation.request
        if request.truncate:
            generated = cut_to_last_sentence(generated)
        text = (request.prefix if request.include_prefix else "") + generated
        return GenerationResult(text=text, prefix=request.prefix, tokens=tokens,
                                seconds=time.monotonic() - generation.submitted_at,
                                model=self.model_name, finish_reason=reason)
