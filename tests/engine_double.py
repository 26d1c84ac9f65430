"""A stand-in for the engine, for unit tests of the HTTP layer only: it follows
the engine's contract (submit, pieces, result, cancel, Busy) without a model."""
from __future__ import annotations

import threading

from app.engine.types import Busy, ContextTooLong, GenerationResult, ModelUnavailable


class EngineDouble:
    def __init__(self, state="ready", error=None, n_ctx=1024):
        self.state = state
        self.error = error
        self.model_name = "double"
        self.info = {"hparams": {"n_ctx": n_ctx, "n_vocab": 300}, "card": None,
                     "limits": {"max_batch": 3, "max_queue": 16, "queue_timeout": 30.0}}
        self.busy_reason = None  # set to make submit() refuse
        self.submitted = []
        self.cancelled = []
        self.pieces_per_generation = ["Then", " Team", " Rocket", " came."]
        self.generation_pieces = None  # replaces GenerationDouble.pieces when set
        self.encoded = []  # every text tokenized, in order
        self.stalled_seconds = 0.0

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list:
        self.encoded.append(text)
        return list(range(len(text.split())))

    def check_admission(self, client=None):
        if self.state == "failed":
            raise ModelUnavailable(f"the model failed to load: {self.error}")
        if self.state != "ready":
            raise Busy("the model is still loading", 5)
        if self.busy_reason:
            raise Busy(self.busy_reason, 7)

    def submit(self, request, client=None):
        self.check_admission(client)
        prefix_tokens = len(self.encode(request.prefix))
        if prefix_tokens + request.length > self.info["hparams"]["n_ctx"]:
            raise ContextTooLong(prefix_tokens, request.length, self.info["hparams"]["n_ctx"])
        self.submitted.append(request)
        return GenerationDouble(self, request, prefix_tokens)

    def stalled_for(self):
        return self.stalled_seconds

    def stats(self):
        return {"in_flight": 1, "queued": 2, "draft_tokens": 40, "draft_tokens_accepted": 25}

    def graph_ops(self):
        return 1234

    def close(self):
        pass


class GenerationDouble:
    def __init__(self, engine, request, prefix_tokens):
        self.engine = engine
        self.request = request
        self.prompt = list(range(prefix_tokens))
        self.cancel_event = threading.Event()

    def pieces(self, timeout=None):
        if self.engine.generation_pieces:
            yield from self.engine.generation_pieces(self)
            return
        for piece in self.engine.pieces_per_generation:
            yield piece

    def indexed_pieces(self, timeout=None):
        for piece in self.pieces(timeout):
            yield 0, piece

    def result(self, timeout=None):
        generated = "".join(self.engine.pieces_per_generation)
        text = (self.request.prefix if self.request.include_prefix else "") + " " + generated
        return GenerationResult(text=text, prefix=self.request.prefix,
                                tokens=len(self.engine.pieces_per_generation),
                                seconds=0.01, model=self.engine.model_name,
                                prompt_tokens=len(self.prompt))

    def cancel(self):
        self.cancel_event.set()
        self.engine.cancelled.append(self)
