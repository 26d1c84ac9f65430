"""pokegen's web application: `create_app()` builds it from the environment.

One application per process holds one engine, started here and loaded in the
background, so that the process answers /healthz (and 503 with Retry-After)
while the weights load.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from flask import Flask, g, request

if TYPE_CHECKING:  # `python -m app.config` must not find app.config imported already
    from app.config import Config

log = logging.getLogger(__name__)


def create_app(config: Config | None = None, engine=None) -> Flask:
    """Builds the app. Without `engine`, a real one is created from `config`
    (or the environment) and starts loading the checkpoint at once."""
    from app.api import api
    from app.openai_api import openai_api
    from app.request_body import MAX_BODY_BYTES
    from app.config import Config
    from app.metrics import ServiceMetrics
    from app.service import Service

    from app.watchdog import start_watchdog

    config = config or Config.from_env()
    if engine is None:
        engine = _start_engine(config)
        start_watchdog(engine, config.stall_restart_after)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.extensions["pokegen"] = Service(engine=engine, config=config,
                                        metrics=ServiceMetrics(engine))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.register_blueprint(api)
    app.register_blueprint(openai_api)
    app.before_request(_start_clock)
    app.after_request(_finish_response)
    return app


def _start_engine(config: Config):
    from app.engine import Engine
    from app.engine.scheduler import SchedulerSettings

    engine = Engine(config.checkpoint_dir, config.run_name,
                    max_batch=config.generation_concurrency,
                    max_queue=config.queue_size,
                    queue_timeout=config.queue_timeout,
                    weight_dtype=config.weight_dtype,
                    scheduling=SchedulerSettings(speculative_tokens=config.speculative_tokens,
                                                 prefill_chunk=config.prefill_chunk),
                    max_per_client=config.client_generation_limit,
                    loading_retry_after=config.loading_retry_after)
    engine.start()
    log.info("loading %s/%s in the background", config.checkpoint_dir, config.run_name)
    return engine


def _start_clock():
    g.started = time.monotonic()


def _finish_response(response):
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    response.headers.setdefault("Access-Control-Expose-Headers", "Retry-After")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path != "/static" and not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    metrics = _service().metrics
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    status, started = response.status_code, g.get("started", time.monotonic())
    if response.is_streamed:
        # Counted when the last byte is sent, so a stream's latency is its whole length.
        response.call_on_close(lambda: metrics.observe(endpoint, status,
                                                       time.monotonic() - started))
    else:
        metrics.observe(endpoint, status, time.monotonic() - started)
    return response


def _service():
    from flask import current_app
    return current_app.extensions["pokegen"]
