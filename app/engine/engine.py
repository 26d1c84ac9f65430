"""The engine the HTTP layer talks to: load once, then accept requests.

`start()` returns at once; a background thread loads the checkpoint, builds
the decoding graph and then runs the scheduler loop for the life of the
process. HTTP threads only submit requests and read their results.
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
import threading
import time

from pokegen.model_card import model_name

from . import faults
from .admission import RequestLine
from .cache_pool import CachePool, pages_for
from .checkpoint import Checkpoint, WeightReader, first_line, open_checkpoint
from .generation import Generation
from .graph import DecoderGraph
from .native import NativeDecoder
from .packed_weights import KernelUnavailable
from .runner import StepRunner
from .scheduler import Scheduler, SchedulerSettings
from .text import Tokenizer
from .types import (Busy, ContextTooLong, GenerationRequest, ModelLoadError,
                    ModelUnavailable, TooManyChoices)

log = logging.getLogger("pokegen.engine")

LOADING, READY, FAILED = "loading", "ready", "failed"
# Before any generation has finished, guess this long for one (seconds).
FIRST_GUESS_SECONDS = 10.0


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Engine:
    def __init__(self, checkpoint_dir: str, run_name: str = "run1", *,
                 max_batch: int = 3, max_queue: int = 16, queue_timeout: float = 30.0,
                 threads: int | None = None, cache_tokens: int | None = None,
                 cache_dtype: str = "bfloat16", weight_dtype: str = "int8",
                 scheduling: SchedulerSettings | None = None,
                 max_per_client: int | None = None, loading_retry_after: int = 5):
        """weight_dtype: bfloat16 (the packed kernel; float32 with a warning
        when it is not built), float32, or int8 (the native decoder, native.py).

        cache_tokens: positions in the key/value pool shared by running
        requests (default: a full context per batch row, so nobody waits for
        room; memory is only touched as places are used). With less, a
        request that does not fit waits for a running one to end.

        max_per_client: generations one client (submit's `client`) may have
        running or waiting at once; None for no such cap."""
        if max_batch < 1 or max_queue < 0 or queue_timeout <= 0:
            raise ValueError("max_batch >= 1, max_queue >= 0 and queue_timeout > 0 are required")
        self.checkpoint_dir = checkpoint_dir
        self.run_name = run_name
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.threads = threads or default_threads()
        self.cache_tokens = cache_tokens
        self.cache_dtype = cache_dtype
        self.weight_dtype = weight_dtype
        self.scheduling = scheduling or SchedulerSettings()
        self.max_per_client = max_per_client
        self.loading_retry_after = loading_retry_after
        self.state = LOADING
        self.error: str | None = None
        self.model_name = run_name
        self._checkpoint: Checkpoint | None = None
        self._tokenizer: Tokenizer | None = None
        self._graph: DecoderGraph | None = None
        self._scheduler: Scheduler | None = None
        self.line = RequestLine(max_batch, max_queue, max_per_client)
        self._settled = threading.Event()  # ready or failed
        self._thread: threading.Thread | None = None
        self._closing = False
        self._lock = threading.Lock()
        self._mean_seconds = FIRST_GUESS_SECONDS
        self._finished = 0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="pokegen-engine", daemon=True)
                self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        self._settled.wait(timeout)
        return self.state == READY

    def close(self, grace: float = 10.0) -> None:
        """Refuses new and waiting requests, lets running ones finish for up to
        `grace` seconds (then ends them with the text they have), stops the thread."""
        self._closing = True
        for generation in self.line.close("the service is shutting down"):
            generation.fail(Busy("the service is shutting down", retry_after=self._retry_after()))
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.stop(grace)
        if self._thread is not None:
            self._thread.join(grace + 30.0)

    def _main(self) -> None:
        try:
            self._load()
        except ModelLoadError as e:
            self._fail(str(e))
            return
        except Exception as e:  # anything else a broken checkpoint can throw
            self._fail(f"cannot load model from {self.checkpoint_dir}/{self.run_name}: {first_line(e)}")
            return
        if self._closing:
            self._graph.close()
            return
        self.state = READY
        self._settled.set()
        log.info("model %s ready (%d graph ops)", self.model_name, self.graph_ops())
        try:
            self._scheduler.run()
        finally:
            self._graph.close()

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = FAILED
        self.line.close(f"the model failed to load: {message}")
        self._settled.set()
        log.error("model failed to load: %s", message)

    def _load(self) -> None:
        checkpoint = open_checkpoint(self.checkpoint_dir, self.run_name)
        self._checkpoint = checkpoint
        self.model_name = model_name(checkpoint.card, self.run_name)
        tokenizer = Tokenizer(checkpoint.run_dir, checkpoint.hparams.n_vocab)
        reader = WeightReader(checkpoint)
        n_ctx = checkpoint.hparams.n_ctx
        self.cache_tokens = max(n_ctx, self.cache_tokens or self.max_batch * n_ctx)
        pool = CachePool.for_positions(self.cache_tokens)
        graph = self._new_graph(checkpoint, pool.places)
        try:
            graph.load_weights(reader)
            graph.warm_up(pool.scratch_places)
        except BaseException:
            graph.close()
            raise
        self._tokenizer, self._graph = tokenizer, graph
        from .corpus_drafts import CorpusDrafts  # here: `python -m app.engine.corpus_drafts` runs alone
        _return_freed_memory()
        self._scheduler = Scheduler(StepRunner(graph), pool, tokenizer, self.line, self.model_name,
                                    settings=self.scheduling, on_finish=self._note_finished,
                                    retry_after=self._retry_after,
                                    corpus_drafts=CorpusDrafts.load(checkpoint.run_dir))
        self._scheduler.before_turn = faults.loop_hook_from_env()

    def _new_graph(self, checkpoint: Checkpoint, pool_size: int) -> DecoderGraph:
        if self.weight_dtype == "int8":
            try:
                return NativeDecoder(checkpoint.hparams, pool_size=pool_size, threads=self.threads,
                                     cache_dtype=self.cache_dtype, max_batch=self.max_batch)
            except KernelUnavailable as e:
                log.warning("int8 weights unavailable, serving bfloat16 weights: %s", e)
                self.weight_dtype = "bfloat16"

        def build(weight_dtype):
            return DecoderGraph(checkpoint.hparams, pool_size=pool_size, threads=self.threads,
                                cache_dtype=self.cache_dtype, max_batch=self.max_batch,
                                weight_dtype=weight_dtype)
        try:
            return build(self.weight_dtype)
        except KernelUnavailable as e:
            log.warning("bfloat16 weights unavailable, serving float32 weights (slower, "
                        "twice the memory): %s", e)
            self.weight_dtype = "float32"
            return build(self.weight_dtype)

    # ------------------------------------------------------------- requests
    def submit(self, request: GenerationRequest, *, client: str | None = None) -> Generation:
        """Queues a request; raises Busy at once when it cannot be taken,
        ContextTooLong when it does not fit the model, TooManyChoices when its
        episodes could never run at once.

        Every refusal that costs nothing comes before the prefix is tokenized,
        which happens once, here. `client`: who asks, for the per-client cap;
        a request for n episodes counts n."""
        self._check_choices(request.n)
        self.check_admission(client, request.n)
        prompt = self.encode(request.prefix)
        n_ctx = self._checkpoint.hparams.n_ctx
        if len(prompt) + request.length > n_ctx:
            raise ContextTooLong(len(prompt), request.length, n_ctx)
        # The episodes after the first share the prompt's places (scheduler._reserve).
        pages = pages_for(len(prompt) + request.length - 1) + (request.n - 1) * pages_for(
            request.length - 1)
        if not self._scheduler.pool.holds(pages):
            raise TooManyChoices(f"n is {request.n}: {request.n} episodes of {request.length} "
                                 f"tokens do not fit the cache of {self.cache_tokens} positions")
        generation = Generation(request, prompt, self.queue_timeout)
        self.line.submit(generation, client, self._retry_after())
        return generation

    def _check_choices(self, n: int) -> None:
        if n > self.max_batch:
            raise TooManyChoices(f"n is {n}: at most {self.max_batch} episodes are decoded "
                                 f"together here")
        if self.max_per_client is not None and n > self.max_per_client:
            raise TooManyChoices(f"n is {n}: one client may hold at most {self.max_per_client} "
                                 f"episodes at once")

    def check_admission(self, client: str | None = None, slots: int = 1) -> None:
        """Raises Busy when a request for `slots` sequences could not be taken now;
        cheap: no tokenizing."""
        if self._closing:
            raise Busy("the service is shutting down", retry_after=self._retry_after())
        if self.state == LOADING:
            raise Busy("the model is still loading", retry_after=self.loading_retry_after)
        if self.state == FAILED:
            raise ModelUnavailable(f"the model failed to load: {self.error}")
        self.line.check(client, slots, self._retry_after())

    def encode(self, text: str) -> list[int]:
        """The prompt submit() feeds for this prefix."""
        if self._tokenizer is None:
            raise Busy("the model is still loading", retry_after=self.loading_retry_after)
        return self._tokenizer.encode(text) or self._empty_prompt()

    def count_tokens(self, text: str) -> int:
        """How many context positions a prefix takes (what submit() will feed)."""
        return len(self.encode(text))

    def stalled_for(self) -> float:
        """Seconds the scheduler has held work (running or waiting requests)
        without taking a turn of its loop; 0 while it keeps up."""
        scheduler = self._scheduler
        if self.state != READY or scheduler is None or self._closing:
            return 0.0
        if not (self.line.in_flight or self.line.queued):
            return 0.0
        return max(0.0, time.monotonic() - scheduler.heartbeat)

    def _empty_prompt(self) -> list[int]:
        # Like gpt-2-simple: an empty prefix starts from the document delimiter.
        if self._tokenizer.end_of_text is not None:
            return [self._tokenizer.end_of_text]
        return self._tokenizer.encode("\n")

    def _note_finished(self, seconds: float) -> None:
        with self._lock:
            self._finished += 1
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * seconds

    def _retry_after(self) -> int:
        """Whole seconds until a slot is likely free for one more request."""
        rounds = (self.line.queued + 1) / self.max_batch
        return int(min(300, max(1, math.ceil(self._mean_seconds * rounds))))

    # ---------------------------------------------------------- inspection
    @property
    def info(self) -> dict:
        checkpoint = self._checkpoint
        return {
            "model": self.model_name,
            "run_name": self.run_name,
            "state": self.state,
            "checkpoint": checkpoint.path if checkpoint else None,
            "hparams": checkpoint.hparams.as_dict() if checkpoint else None,
            "card": checkpoint.card if checkpoint else None,
            "limits": {
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
                "queue_timeout": self.queue_timeout,
                "max_tokens": (checkpoint.hparams.n_ctx - 1) if checkpoint else None,
                "cache_tokens": self.cache_tokens,
                "cache_dtype": self.cache_dtype,
                "weight_dtype": self.weight_dtype,
                "speculative_tokens": self.scheduling.speculative_tokens,
                "prefill_chunk": self.scheduling.prefill_chunk,
            },
        }

    def stats(self) -> dict:
        scheduler = self._scheduler
        return {
            "state": self.state,
            "in_flight": self.line.in_flight,
            "queued": self.line.queued,
            "max_batch": self.max_batch,
            "max_queue": self.max_queue,
            "finished": self._finished,
            "tokens_generated": scheduler.tokens_generated if scheduler else 0,
            "prompt_tokens_read": scheduler.prompt_tokens_read if scheduler else 0,
            "stalled_seconds": self.stalled_for(),
            "tokenizer_cache_bytes": self._tokenizer.words.bytes if self._tokenizer else 0,
            "graph_ops": self.graph_ops(),
            "draft_tokens": scheduler.drafted if scheduler else 0,
            "draft_tokens_accepted": scheduler.accepted if scheduler else 0,
        }

    def graph_ops(self) -> int:
        return self._graph.op_count() if self._graph is not None else 0


def _return_freed_memory() -> None:
    """Loading frees large temporary buffers; hand their pages back to the OS
    so the process's resident size is what the model really holds."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
