"""The hand-off between the HTTP layer and the generation engine.

The HTTP layer validates a query into a `GenerationRequest`, submits it to the
engine and reads back text pieces as they are sampled, then a
`GenerationResult`. Overload is an exception raised at once, never a wait
without end.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Optional

DEFAULT_PREFIX = "Pikachu and Ash were"
MAX_SEED = 2**31 - 1


def choice_seed(seed: int, index: int) -> int:
    """The seed episode `index` of a request samples with: choice 0 keeps the
    request's seed, choice i > 0 takes the first 31 bits of BLAKE2b("<seed>/<i>").
    Choice i of a request therefore writes what a request for one episode with
    seed choice_seed(seed, i) writes."""
    if index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & MAX_SEED


@dataclass(frozen=True)
class GenerationRequest:
    prefix: str = DEFAULT_PREFIX
    length: int = 256  # tokens to generate, 1..1023
    temperature: float = 0.7
    top_k: int = 40  # 0 turns it off
    top_p: float = 1.0  # 1.0 turns nucleus sampling off
    seed: Optional[int] = None  # same seed and parameters, same text
    truncate: bool = True  # cut back to the last complete sentence
    include_prefix: bool = True
    # End early when the model ends the episode: the end-of-text token, or the
    # delimiter written as text (fine-tuned models write it that way).
    stop_at_end: bool = True
    stop: tuple[str, ...] = ()  # more strings that end the text; never shown
    # Repetition control, off at these values. repetition_penalty divides a positive
    # logit (multiplies a negative one) of every token already in the prompt or the
    # text, as in Hugging Face; frequency_penalty and presence_penalty subtract, per
    # token of the text so far, count * frequency + presence, as OpenAI does;
    # no_repeat_ngram_size forbids a token that would repeat an n-gram of the text.
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    n: int = 1  # episodes from this prefix, each on its own seed derived from `seed`

    def __post_init__(self):
        # The request's own invariants, so that no caller can hand the engine one it
        # cannot run; app/validation.py checks a query's limits first, with friendlier words.
        if not (self.length >= 1 and self.temperature >= 0 and self.top_k >= 0
                and 0 < self.top_p <= 1):
            raise ValueError("length >= 1, temperature >= 0, top_k >= 0 and 0 < top_p <= 1 "
                             "are required")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError("seed must be a non-negative integer")
        if not (self.repetition_penalty > 0 and math.isfinite(self.frequency_penalty)
                and math.isfinite(self.presence_penalty) and self.no_repeat_ngram_size >= 0
                and self.n >= 1):
            raise ValueError("repetition_penalty > 0, finite frequency_penalty and "
                             "presence_penalty, no_repeat_ngram_size >= 0 and n >= 1 "
                             "are required")


@dataclass(frozen=True)
class Choice:
    """One episode of a request: what a request of n=1 answers, once per choice."""

    text: str
    tokens: int  # tokens generated (before truncation)
    # "length" (all tokens written), "stop" (a stop string, the episode
    # delimiter included), "end_of_text" (the end-of-text token), "cancelled"
    # (the caller went away), "shutdown" (cut short by close)
    finish_reason: str


@dataclass(frozen=True)
class GenerationResult:
    """The answer; text, tokens and finish_reason are those of choice 0."""

    text: str
    prefix: str
    tokens: int  # tokens generated (before truncation)
    seconds: float
    model: str
    finish_reason: str = "length"  # as Choice.finish_reason
    choices: tuple[Choice, ...] = ()  # every episode, in order; left empty: this one alone
    prompt_tokens: int = 0  # context positions the prefix took

    def __post_init__(self):
        if not self.choices:
            object.__setattr__(self, "choices",
                               (Choice(self.text, self.tokens, self.finish_reason),))


@dataclass
class Busy(Exception):
    """No room for this request now: answer 503 with Retry-After."""

    reason: str
    retry_after: int = field(default=1)  # whole seconds, at least 1

    def __str__(self) -> str:
        return self.reason


class ClientBusy(Busy):
    """This client already holds its share of the engine: answer 429 with Retry-After."""


@dataclass
class ContextTooLong(ValueError):
    """The prefix and the tokens asked for do not fit the model's context."""

    prefix_tokens: int
    length: int
    n_ctx: int

    def __str__(self) -> str:
        return (f"{self.prefix_tokens} prefix tokens and {self.length} more exceed the "
                f"context of {self.n_ctx}")


class TooManyChoices(ValueError):
    """More episodes than can ever run at once for one request: refused, never queued."""


class ModelUnavailable(Exception):
    """The model failed to load: every generation is refused with this reason (503)."""


class ModelLoadError(RuntimeError):
    """The checkpoint is missing or unreadable: one clear message at start."""
