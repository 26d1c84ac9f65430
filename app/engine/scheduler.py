"""Deciding what each decoding step runs, and taking its results.

The request line (admission.py) owns every request's place and slots; the
scheduler starts the admitted ones when the cache has room, decodes them as
sequences, and tells the line when each sequence ends. Each step it plans
(`schedule()`): one row for each decoding sequence, plus the draft tokens it
guesses for those that speculate, plus a chunk of the prompts still being read,
within a budget of prompt tokens so that a long prefix never stalls the running
streams for long. The runner executes the plan in one pass over the weights;
`update()` then samples, checks the drafts, streams pieces and ends the
sequences that are done.

Speculation never changes an answer: a sequence samples each position from the
target model's own logits with its own generator, exactly as without drafts,
and a draft is kept only while it equals the token sampled. For drafts that are
a single guess (probability one on one token) this is the standard
rejection-sampling rule: accept with probability p(draft), else sample from p
without the draft. Repetition control sees the same history either way: the
accepted tokens before the row.

A request for n episodes runs as n sequences. The first reads the prompt; the
others read its keys and values from the same (shared) pages, and each
samples its first token from the same logits with its own generator.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from pokegen.gpt2_format import END_OF_TEXT

from .admission import RequestLine
from .cache_pool import CachePool, pages_for
from .drafts import PromptLookup
from .generation import Generation
from .prefill_budget import PrefillBudget
from .repetition import RepetitionControl
from .runner import Segment, StepRunner
from .sampling import TokenSampler
from .stops import StopStrings
from .text import PieceDecoder, Tokenizer
from .types import MAX_SEED, Busy, choice_seed

if TYPE_CHECKING:  # imported by the engine when it loads a run, so that the module runs alone too
    from .corpus_drafts import CorpusDrafts

log = logging.getLogger("pokegen.engine")


@dataclass
class SchedulerSettings:
    # The most prompt tokens read per step while other sequences are decoding;
    # fewer when they cost more than a decode step (prefill_budget.py).
    prefill_chunk: int = 16
    # Prompt tokens per step when nobody is decoding (a bound only so that the
    # loop still notices cancellations and new requests between chunks).
    idle_prefill_chunk: int = 256
    # Draft tokens a sequence may verify per step (0: no speculation) ...
    speculative_tokens: int = 4
    # ... while at most this many sequences decode: past it, rows of other
    # requests are worth more than guesses.
    speculate_up_to: int = 2


@dataclass
class Sequence:
    generation: Generation
    prompt: list[int]
    pages: list[int]        # reserved in the pool
    places: np.ndarray      # pool place of each position
    limit: int              # tokens to generate
    sampler: TokenSampler
    decoder: PieceDecoder
    drafts: PromptLookup | None
    stops: StopStrings
    started_at: float
    index: int = 0          # which of its request's episodes
    # The sequence that reads the prompt for this one, None when it reads it itself.
    reader: Sequence | None = None
    read: int = 0           # prompt tokens whose keys and values are in the pool
    last_token: int = -1    # the latest token, fed to the model at `position`
    produced: int = 0
    pieces: list[str] = field(default_factory=list)  # the text shown so far

    @property
    def prefilling(self) -> bool:
        return self.read < len(self.prompt)

    @property
    def position(self) -> int:
        return len(self.prompt) + self.produced - 1


class Scheduler:
    def __init__(self, runner: StepRunner, pool: CachePool, tokenizer: Tokenizer,
                 line: RequestLine,
                 model_name: str, settings: SchedulerSettings | None = None,
                 on_finish=None, retry_after=None, corpus_drafts: CorpusDrafts | None = None):
        self.runner = runner
        self.tokenizer = tokenizer
        self.line = line
        self.model_name = model_name
        self.settings = replace(settings or SchedulerSettings())  # a copy: adjusted below
        if not runner.ragged:
            # Rectangles only: no drafts, and each prompt read whole, as one call.
            self.settings.speculative_tokens = 0
            self.settings.prefill_chunk = self.settings.idle_prefill_chunk = runner.n_ctx
        self.corpus_drafts = corpus_drafts  # guesses from the training text, when the run has them
        self.on_finish = on_finish or (lambda seconds: None)
        self.retry_after = retry_after or (lambda: 1)
        self.pool = pool
        self.prefill_budget = PrefillBudget(self.settings.prefill_chunk)
        self.running: list[Sequence] = []
        self.stopping = False
        self.stop_deadline = float("inf")
        self.drafted = 0   # draft tokens checked, and of them kept: the acceptance rate
        self.accepted = 0
        # Set at every turn: the engine's stall detection reads it.
        self.heartbeat = time.monotonic()
        self.before_turn = lambda: None  # a fault-injection point for tests
        self.tokens_generated = 0  # by every sequence, cancelled ones included
        self.prompt_tokens_read = 0  # prompt tokens run through the model

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
        self.heartbeat = time.monotonic()
        self.before_turn()
        self._end_stale()
        if self.stopping and time.monotonic() >= self.stop_deadline:
            for seq in list(self.running):
                self._finish(seq, "shutdown")
            for generation in self.line.take_all():
                generation.fail(Busy("the service is shutting down",
                                     retry_after=self.retry_after()))
        self._start_what_fits()
        for seq in [s for s in self.running if s.generation.cancelled]:
            self._finish(seq, "cancelled")
        if not self.running:
            if self.stopping and not self.line.in_flight:
                return True
            self.line.wait_for_work(self._idle_timeout())
            return False
        plan = self.schedule()
        started = time.perf_counter()
        try:
            logits = self.runner.run(plan, self.pool)
        except Exception as e:  # the decoder is broken: nothing sensible to retry
            self._fail_all(e)
            return False
        if any(not s.sequence.prefilling for s in plan):
            self.prefill_budget.observe(time.perf_counter() - started,
                                        sum(len(s.tokens) for s in plan if s.sequence.prefilling))
        self.update(plan, logits)
        return False

    def stop(self, grace: float) -> None:
        self.stop_deadline = time.monotonic() + grace
        self.stopping = True

    def _idle_timeout(self) -> float:
        deadline = self.line.next_deadline()
        if deadline is None:
            return 0.5
        return min(0.5, max(0.0, deadline - time.monotonic()))

    def _end_stale(self) -> None:
        """Answers the requests that left the line unstarted: cancelled, or waited too long."""
        expired, cancelled = self.line.take_stale()
        for generation in expired:
            waited = time.monotonic() - generation.submitted_at
            generation.fail(Busy(f"waited {waited:.0f} s for a generation slot",
                                 retry_after=self.retry_after()))
        for generation in cancelled:
            generation.end_unstarted("cancelled", self.model_name)

    # ------------------------------------------------------------ admission
    def _start_what_fits(self) -> None:
        """Starts the admitted requests in order while the pool has room."""
        while (generation := self.line.next_admitted()) is not None:
            reserved = self._reserve(len(generation.prompt), generation.request.length,
                                     generation.slots)
            if reserved is None:
                return  # wait for running requests to give places back
            self.line.started(generation)
            self._start(generation, reserved)

    def _reserve(self, prompt: int, limit: int, episodes: int):
        """(pages, places) for each episode, or None when the pool has not room
        for all. Positions fed to the model: the prompt, then each new token but
        the last; the episodes after the first read the first one's prompt."""
        first = self.pool.reserve(prompt + limit - 1)
        if first is None:
            return None
        reserved = [first]
        prompt_pages = first[0][:pages_for(prompt, self.pool.page)]
        for _ in range(episodes - 1):
            own = self.pool.reserve(limit - 1)
            if own is None:
                for pages, _ in reserved:
                    self.pool.release(pages)
                return None
            self.pool.share(prompt_pages)
            reserved.append((prompt_pages + own[0], np.concatenate([first[1][:prompt], own[1]])))
        return reserved

    def _start(self, generation: Generation, reserved: list) -> None:
        request, prompt = generation.request, generation.prompt
        seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
        stops = request.stop + ((END_OF_TEXT,) if request.stop_at_end else ())
        reader = None
        for index, (pages, places) in enumerate(reserved):
            sampler = TokenSampler(request.temperature, request.top_k, request.top_p,
                                   choice_seed(seed, index), self.tokenizer.vocab_size,
                                   RepetitionControl.for_request(request, prompt))
            drafts = PromptLookup(prompt) if self.settings.speculative_tokens else None
            seq = Sequence(
                generation=generation, prompt=prompt, pages=pages, places=places,
                limit=request.length, sampler=sampler, decoder=PieceDecoder(self.tokenizer),
                drafts=drafts, stops=StopStrings(stops), started_at=time.monotonic(),
                index=index, reader=reader)
            reader = reader or seq
            self.running.append(seq)

    # ------------------------------------------------------------- planning
    def schedule(self) -> list[Segment]:
        """This step's work: a segment of consecutive tokens per sequence."""
        plan = []
        decoding = [s for s in self.running if not s.prefilling]
        speculate = (self.settings.speculative_tokens > 0
                     and len(decoding) <= self.settings.speculate_up_to)
        for seq in decoding:
            # Tokens after this one may still be produced: never draft past them.
            room = min(self.settings.speculative_tokens, seq.limit - seq.produced - 1)
            guess = self._guess(seq, room) if speculate and room > 0 else []
            plan.append(Segment(seq, [seq.last_token, *guess], seq.position, logits="all"))
        budget = (self.prefill_budget.tokens() if decoding and self.runner.ragged
                  else self.settings.idle_prefill_chunk)
        for seq in self.running:
            if budget <= 0:
                break
            if seq.prefilling and seq.reader is None:
                chunk = seq.prompt[seq.read:seq.read + budget]
                ends = seq.read + len(chunk) == len(seq.prompt)
                plan.append(Segment(seq, chunk, seq.read, logits="last" if ends else "none"))
                budget -= len(chunk)
        return plan

    def _guess(self, seq: Sequence, count: int) -> list[int]:
        """The episode's own earlier words first, else the training text's likeliest."""
        guess = seq.drafts.propose(count)
        if not guess and self.corpus_drafts is not None:
            guess = self.corpus_drafts.propose(seq.drafts.tokens, count)
        return guess

    def update(self, plan: list[Segment], logits: list[np.ndarray]) -> None:
        """Takes one step's logits: samples, checks drafts, ends what is done."""
        for segment, rows in zip(plan, logits):
            seq = segment.sequence
            if seq not in self.running:  # ended by an earlier segment's failure
                continue
            if seq.prefilling:
                seq.read += len(segment.tokens)
                self.prompt_tokens_read += len(segment.tokens)
                if not seq.prefilling:
                    self._first_tokens(seq, rows[-1])
                continue
            drafts = segment.tokens[1:]
            for i, row in enumerate(rows):
                token = seq.sampler(row)
                if i < len(drafts):
                    self.drafted += 1
                    self.accepted += token == drafts[i]
                if not self._emit(seq, token) or i >= len(drafts) or token != drafts[i]:
                    break

    def _first_tokens(self, reader: Sequence, row: np.ndarray) -> None:
        """The prompt is read: each episode of the request samples its first token."""
        episodes = [reader] + [s for s in self.running if s.reader is reader]
        for seq in episodes:
            seq.read = len(seq.prompt)
            self._emit(seq, seq.sampler(row))

    # ------------------------------------------------------------ sequences
    def _emit(self, seq: Sequence, token: int) -> bool:
        """Adds a sampled token to the sequence; False when that ended it."""
        if token == self.tokenizer.end_of_text and seq.generation.request.stop_at_end:
            self._finish(seq, "end_of_text")
            return False
        seq.produced += 1
        self.tokens_generated += 1
        seq.last_token = token
        if seq.drafts is not None:
            seq.drafts.append(token)
        piece, stopped = seq.stops.feed(seq.decoder.feed(token))
        self._show(seq, piece)
        if stopped:
            self._finish(seq, "stop")
            return False
        if seq.produced >= seq.limit:
            self._finish(seq, "length")
            return False
        return True

    def _show(self, seq: Sequence, piece: str) -> None:
        seq.pieces.append(piece)
        seq.generation.push_piece(piece, seq.index)

    def _finish(self, seq: Sequence, reason: str) -> None:
        if reason != "stop":  # the text ends here: what was held back is shown
            tail, stopped = seq.stops.feed(seq.decoder.flush())
            self._show(seq, tail if stopped else tail + seq.stops.flush())
            reason = "stop" if stopped else reason
        self._release(seq)
        seconds = time.monotonic() - seq.started_at
        seq.generation.complete("".join(seq.pieces), seq.produced, reason, self.model_name,
                                seq.index)
        self.on_finish(seconds)

    def _release(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.pool.release(seq.pages)
        self.line.sequence_ended()

    def _fail_all(self, error: Exception) -> None:
        log.exception("generation step failed")
        for seq in list(self.running):
            self._release(seq)
            seq.generation.fail(RuntimeError(f"generation failed: {error}"))
