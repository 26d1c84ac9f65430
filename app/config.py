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
    # Generations one client address may have running or waiting at once, so
    # that one client cannot take every slot and the whole queue.
    client_generation_limit: int = 4
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
    # Work pending and no turn of the decoding loop for this long: /readyz
    # answers 503 and new generations are refused (a wedge must not look healthy).
    stall_timeout: float = 30.0
    # A stall this long ends the worker process, which uWSGI's master then
    # starts again (0: never).
    stall_restart_after: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            checkpoint_dir=env.get("CHECKPOINT_DIR") or defaults.checkpoint_dir,
            run_name=env.get("RUN_NAME") or defaults.run_name,
            generation_concurrency=_number(env, "GENERATION_CONCURRENCY", int,
                                           defaults.generation_concurrency, minimum=1,
                                           maximum=MAX_CONCURRENCY),
            queue_size=_number(env, "QUEUE_SIZE", int, defaults.queue_size, minimum=0,
                               maximum=MAX_COUNT),
            queue_timeout=_number(env, "QUEUE_TIMEOUT", float, defaults.queue_timeout, minimum=0,
                                  maximum=MAX_SECONDS, above_minimum=True),
            request_timeout=_number(env, "REQUEST_TIMEOUT", float, defaults.request_timeout,
                                    minimum=1, maximum=MAX_SECONDS),
            loading_retry_after=_number(env, "LOADING_RETRY_AFTER", int,
                                        defaults.loading_retry_after, minimum=1,
                                        maximum=MAX_SECONDS),
            weight_dtype=_choice(env, "WEIGHT_DTYPE", ("bfloat16", "float32", "int8"),
                                 defaults.weight_dtype),
            speculative_tokens=_number(env, "SPECULATIVE_TOKENS", int, defaults.speculative_tokens,
                                       minimum=0, maximum=MAX_CONTEXT),
            prefill_chunk=_number(env, "PREFILL_CHUNK", int, defaults.prefill_chunk, minimum=1,
                                  maximum=MAX_CONTEXT),
            client_generation_limit=_number(env, "CLIENT_GENERATION_LIMIT", int,
                                            defaults.client_generation_limit, minimum=1,
                                            maximum=MAX_COUNT),
            stall_timeout=_number(env, "STALL_TIMEOUT", float, defaults.stall_timeout,
                                  minimum=1, maximum=MAX_SECONDS),
            stall_restart_after=_stall_restart_after(env, defaults),
        )

    def limits(self) -> dict:
        """The limits the HTTP layer adds to the engine's, as shown by /info."""
        return {"request_timeout": self.request_timeout,
                "client_generation_limit": self.client_generation_limit,
                "stall_timeout": self.stall_timeout,
                "stall_restart_after": self.stall_restart_after}

    def harakiri(self) -> int:
        """uWSGI's harakiri: seconds after which a request still running has
        its worker killed; above REQUEST_TIMEOUT, so the app answers first."""
        return int(math.ceil(self.request_timeout)) + HARAKIRI_MARGIN


# Seconds between the app's own deadline and uWSGI's last resort.
HARAKIRI_MARGIN = 60

# Upper bounds: a value past them is a typo, and would fail later, deep in the
# service (a wait too long for the platform's clock, a cache for a million rows).
MAX_SECONDS = 86400  # a day
MAX_CONCURRENCY = 256
MAX_COUNT = 100_000
MAX_CONTEXT = 1024  # GPT-2's context: no more tokens to read or guess at once


def _stall_restart_after(env, defaults) -> float:
    stall_timeout = _number(env, "STALL_TIMEOUT", float, defaults.stall_timeout, minimum=1,
                            maximum=MAX_SECONDS)
    # Unset, it is never shorter than the stall it follows.
    default = max(defaults.stall_restart_after, stall_timeout)
    value = _number(env, "STALL_RESTART_AFTER", float, default, minimum=0, maximum=MAX_SECONDS)
    if 0 < value < stall_timeout:
        raise ConfigError(f"STALL_RESTART_AFTER must be 0 (never) or at least STALL_TIMEOUT "
                          f"({stall_timeout:g}), got {env.get('STALL_RESTART_AFTER')!r}")
    return value


def _choice(env, name, choices, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip() not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw.strip()


def _number(env, name, kind, default, *, minimum, maximum, above_minimum=False):
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
    if value < minimum or (above_minimum and value == minimum):
        raise ConfigError(f"{name} must be {'above' if above_minimum else 'at least'} {minimum}, "
                          f"got {raw!r}")
    if value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {raw!r}")
    return value


def main() -> int:
    """`python -m app.config`: checks the environment's settings and prints them."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Check pokegen's settings (environment "
                                                 "variables) and print the values in force.")
    parser.add_argument("--harakiri", action="store_true",
                        help="print only uWSGI's harakiri seconds (read by uwsgi.ini)")
    args = parser.parse_args()
    try:
        config = Config.from_env()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.harakiri:
        print(config.harakiri())
        return 0
    for name, value in vars(config).items():
        print(f"{name.upper()}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
