"""Service configuration, read from environment variables with defaults that work.

Every setting has one name, used alike by `make serve`, the containers and the
tests. A bad value stops the start with one clear message.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Config:
    checkpoint_dir: str = "checkpoint"
    run_name: str = "run1"
    # Generations decoded at once: the article's cap of three, as one batch.
    generation_concurrency: int = 3
    # Requests allowed to wait for a slot, and how long each may wait.
    queue_size: int = 16
    queue_timeout: float = 30.0
    # Longest a request may take from arrival to its last token; nginx's
    # upstream timeout must be longer.
    request_timeout: float = 300.0
    # Seconds a client is told to wait while the model loads.
    loading_retry_after: int = 5
    # How the engine holds the weights: int8 (the native decoder: a quarter of
    # the memory, and a row's logits independent of its batch on every CPU),
    # bfloat16 or float32 (TensorFlow; float32 is bit for bit the checkpoint).
    weight_dtype: str = "int8"
    # Draft tokens a sequence checks per step when few sequences run (0: none);
    # the answers are the same either way.
    speculative_tokens: int = 4
    # Prompt tokens read per step while other streams run: bounds how long a
    # long prefix holds up their next token.
    prefill_chunk: int = 16

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            checkpoint_dir=env.get("CHECKPOINT_DIR") or defaults.checkpoint_dir,
            run_name=env.get("RUN_NAME") or defaults.run_name,
            generation_concurrency=_number(env, "GENERATION_CONCURRENCY", int,
                                           defaults.generation_concurrency, minimum=1),
            queue_size=_number(env, "QUEUE_SIZE", int, defaults.queue_size, minimum=0),
            queue_timeout=_number(env, "QUEUE_TIMEOUT", float, defaults.queue_timeout, minimum=0),
            request_timeout=_number(env, "REQUEST_TIMEOUT", float, defaults.request_timeout,
                                    minimum=1),
            loading_retry_after=_number(env, "LOADING_RETRY_AFTER", int,
                                        defaults.loading_retry_after, minimum=1),
            weight_dtype=_choice(env, "WEIGHT_DTYPE", ("bfloat16", "float32", "int8"),
                                 defaults.weight_dtype),
            speculative_tokens=_number(env, "SPECULATIVE_TOKENS", int, defaults.speculative_tokens,
                                       minimum=0),
            prefill_chunk=_number(env, "PREFILL_CHUNK", int, defaults.prefill_chunk, minimum=1),
        )

    def limits(self) -> dict:
        """The limits the HTTP layer adds to the engine's, as shown by /info."""
        return {"request_timeout": self.request_timeout}


def _choice(env, name, choices, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip() not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw.strip()


def _number(env, name, kind, default, *, minimum):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise ConfigError(f"{name} must be a{'n integer' if kind is int else ' finite number'}, "
                          f"got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def main() -> int:
    """`python -m app.config`: checks the environment's settings and prints them."""
    import argparse
    import sys

    argparse.ArgumentParser(description="Check pokegen's settings (environment variables) "
                                        "and print the values in force.").parse_args()
    try:
        config = Config.from_env()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, value in vars(config).items():
        print(f"{name.upper()}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
