"""Service configuration, read from environment variables with defaults that work.

SETTINGS is the one list of the service's settings: each one's name, default,
range, meaning and readers (the app, nginx, uWSGI). The README's table is made
from it (scripts/settings_docs.py), `make serve` passes its defaults
(`python -m app.config --export-defaults`), and the tests check that uwsgi.ini,
the nginx templates and their render script, docker-compose.yml and
k8s/configmap.yaml agree with it. A bad value stops the start with one clear
message.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shlex
from dataclasses import dataclass
from typing import Mapping

APP, NGINX, UWSGI = "app", "nginx", "uWSGI"

# Upper bounds: a value past them is a typo, and would fail later, deep in the
# service (a wait too long for the platform's clock, a cache for a million rows).
MAX_SECONDS = 86400  # a day
MAX_CONCURRENCY = 256
MAX_COUNT = 100_000
MAX_CONTEXT = 1024  # GPT-2's context: no more tokens to read or guess at once
MAX_NGINX_COUNT = 999_999  # what scripts/render-nginx-config.sh accepts


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Setting:
    """One environment variable of the service."""
    name: str
    default: str  # as written in the environment; "" is none
    readers: tuple[str, ...]
    what: str
    kind: str = "text"  # text, integer, number, choice or addresses
    minimum: int | None = None
    maximum: int | None = None
    above_minimum: bool = False  # the minimum itself is refused
    choices: tuple[str, ...] = ()
    # False when an empty value means none rather than the default.
    empty_is_default: bool = True
    # Passed on to the containers (docker-compose.yml, k8s/configmap.yaml);
    # False for what the images fix themselves (their port, address and paths).
    containers: bool = True

    @property
    def value(self):
        """The default, typed as the app holds it."""
        return {"integer": int, "number": float}.get(self.kind, str)(self.default)

    def bounds(self) -> str:
        """The values accepted, in words."""
        if self.kind == "choice":
            return ", ".join(f"`{choice}`" for choice in self.choices)
        if self.kind == "addresses":
            return "IP addresses or CIDR ranges"
        if self.minimum is None:
            return ""
        if self.above_minimum:
            return f"above {self.minimum}, at most {self.maximum}"
        return f"{self.minimum} to {self.maximum}"

    def read(self, env: Mapping[str, str], default=None):
        """The value in force: the environment's, checked, or the default."""
        default = self.value if default is None else default
        if self.kind in ("integer", "number"):
            return _number(env, self.name, int if self.kind == "integer" else float, default,
                           minimum=self.minimum, maximum=self.maximum,
                           above_minimum=self.above_minimum)
        if self.kind == "choice":
            return _choice(env, self.name, self.choices, default)
        return env.get(self.name) or default


SETTINGS = {setting.name: setting for setting in (
    Setting("PORT", "5000", (NGINX,), "port nginx listens on (the containers: the host port "
            "published)", containers=False),
    Setting("BIND_ADDRESS", "0.0.0.0", (NGINX,), "address nginx listens on", containers=False),
    Setting("CHECKPOINT_DIR", "checkpoint", (APP,), "folder holding the runs (the containers: "
            "the image's, or one mounted with `POKEGEN_CHECKPOINT=volume`)", containers=False),
    Setting("RUN_NAME", "run1", (APP,), "the run in `CHECKPOINT_DIR` to serve"),
    Setting("GENERATION_CONCURRENCY", "3", (APP,), "sequences decoded together on one copy of "
            "the weights (the article's cap of three, as one batch)", "integer", 1,
            MAX_CONCURRENCY),
    Setting("QUEUE_SIZE", "16", (APP,), "requests that may wait for a slot; beyond, a 503 with "
            "`Retry-After`", "integer", 0, MAX_COUNT),
    Setting("QUEUE_TIMEOUT", "30", (APP,), "seconds a request may wait for a slot", "number",
            0, MAX_SECONDS, above_minimum=True),
    Setting("REQUEST_TIMEOUT", "300", (APP, NGINX, UWSGI), "seconds a request may take from "
            "arrival to its last token (then a 504); nginx waits `UPSTREAM_MARGIN` longer, uWSGI's "
            "harakiri 60 s longer", "number", 1, MAX_SECONDS),
    Setting("UPSTREAM_MARGIN", "30", (NGINX,), "seconds nginx waits for the app beyond "
            "`REQUEST_TIMEOUT`, so that the app always answers first", "integer", 1, 9999),
    Setting("LOADING_RETRY_AFTER", "5", (APP,), "seconds a client is told to wait (`Retry-After`) "
            "while the model loads", "integer", 1, MAX_SECONDS),
    Setting("WEIGHT_DTYPE", "int8", (APP,), "how the engine holds the weights: `int8` is the "
            "native decoder that `make venv` compiles (8.5 bits a weight, a row's logits "
            "independent of its batch on every CPU); `bfloat16` and `float32` the TensorFlow "
            "graph, `float32` bit for bit the checkpoint", "choice",
            choices=("bfloat16", "float32", "int8")),
    Setting("POKEGEN_KERNEL", "", (APP,), "one build of the int8 decoder to use (all give the "
            "same logits); unset, the fastest this CPU runs. Checked when the model loads",
            "choice", choices=("avx512", "avx2", "generic")),  # app/engine/native.py's builds
    Setting("SPECULATIVE_TOKENS", "4", (APP,), "draft tokens, looked up in the episode's own "
            "text, that one or two running sequences check per step (0: no drafting; answers "
            "are the same either way)", "integer", 0, MAX_CONTEXT),
    Setting("PREFILL_CHUNK", "16", (APP,), "the most prompt tokens read per step while other "
            "streams run; fewer when they would cost more than a decode step", "integer", 1,
            MAX_CONTEXT),
    Setting("CLIENT_GENERATION_LIMIT", "4", (APP,), "generations one client address may have "
            "running or waiting at once (429 beyond)", "integer", 1, MAX_COUNT),
    Setting("CONNECTION_LIMIT", "8", (NGINX,), "requests one client address may have open at "
            "the app at once (JSON 429 beyond)", "integer", 1, MAX_NGINX_COUNT),
    Setting("RATE_LIMIT", "10", (NGINX,), "requests a second per client address (the page's "
            "files are not counted)", "integer", 1, MAX_NGINX_COUNT),
    Setting("RATE_BURST", "40", (NGINX,), "extra requests a client address may send in a "
            "burst: the first half at once, the rest paced, beyond it a JSON 429", "integer", 1,
            MAX_NGINX_COUNT),
    Setting("TRUSTED_PROXIES", "", (NGINX,), "proxies (a load balancer) whose "
            "`X-Forwarded-For` names the client, separated by spaces or commas; without them "
            "every client behind the proxy shares one address and one set of limits",
            "addresses"),
    Setting("INTERNAL_ADDRESSES", "127.0.0.1 ::1", (NGINX,), "who may read `/metrics` and "
            "`/info` through nginx (others get a JSON 403); empty: nobody", "addresses",
            empty_is_default=False),
    Setting("STALL_TIMEOUT", "30", (APP,), "seconds of work pending with no step of the "
            "decoding loop before `/readyz` and new generations answer 503", "number", 1,
            MAX_SECONDS),
    Setting("STALL_RESTART_AFTER", "120", (APP,), "seconds of such a stall before the app ends "
            "its uWSGI worker, which uWSGI's master starts again (0: never); unset, at least "
            "`STALL_TIMEOUT`", "number", 0, MAX_SECONDS),
)}


def _default(name: str):
    return SETTINGS[name].value


@dataclass(frozen=True)
class Config:
    """The settings the app reads (SETTINGS' rows of the same names), in force."""
    checkpoint_dir: str = _default("CHECKPOINT_DIR")
    run_name: str = _default("RUN_NAME")
    generation_concurrency: int = _default("GENERATION_CONCURRENCY")
    queue_size: int = _default("QUEUE_SIZE")
    queue_timeout: float = _default("QUEUE_TIMEOUT")
    client_generation_limit: int = _default("CLIENT_GENERATION_LIMIT")
    request_timeout: float = _default("REQUEST_TIMEOUT")
    loading_retry_after: int = _default("LOADING_RETRY_AFTER")
    weight_dtype: str = _default("WEIGHT_DTYPE")
    speculative_tokens: int = _default("SPECULATIVE_TOKENS")
    prefill_chunk: int = _default("PREFILL_CHUNK")
    stall_timeout: float = _default("STALL_TIMEOUT")
    stall_restart_after: float = _default("STALL_RESTART_AFTER")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if environ is None else environ
        fields = _config_fields()
        # In the table's order, so that the first bad value is the one reported.
        values = {name.lower(): setting.read(env) for name, setting in SETTINGS.items()
                  if name.lower() in fields and name != "STALL_RESTART_AFTER"}
        values["stall_restart_after"] = _stall_restart_after(env, values["stall_timeout"])
        return cls(**values)

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


def export_defaults(env: Mapping[str, str], config: Config) -> str:
    """`export NAME=VALUE` lines that give every setting left unset (or
    empty, where that means the default) its default: the app's as in force,
    so that STALL_RESTART_AFTER still follows STALL_TIMEOUT."""
    fields, lines = _config_fields(), []
    for name, setting in SETTINGS.items():
        raw = env.get(name)
        if raw is None or (raw == "" and setting.empty_is_default):
            value = getattr(config, name.lower()) if name.lower() in fields else setting.default
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            lines.append(f"export {name}={shlex.quote(str(value))}")
    return "\n".join(lines)


def _config_fields() -> set[str]:
    return {field.name for field in dataclasses.fields(Config)}


def _stall_restart_after(env, stall_timeout: float) -> float:
    setting = SETTINGS["STALL_RESTART_AFTER"]
    # Unset, it is never shorter than the stall it follows.
    value = setting.read(env, default=max(setting.value, stall_timeout))
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
    printed = parser.add_mutually_exclusive_group()
    printed.add_argument("--harakiri", action="store_true",
                         help="print only uWSGI's harakiri seconds (read by uwsgi.ini)")
    printed.add_argument("--export-defaults", action="store_true",
                         help="print `export NAME=VALUE` lines giving each setting left unset "
                              "its default (scripts/serve.sh evaluates them)")
    args = parser.parse_args()
    try:
        config = Config.from_env()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.harakiri:
        print(config.harakiri())
        return 0
    if args.export_defaults:
        print(export_defaults(os.environ, config))
        return 0
    for name, value in vars(config).items():
        print(f"{name.upper()}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
