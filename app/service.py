"""What the HTTP layer needs from the engine, in one place: the context-window
check, submission, and refusals with a reason when the model is not serving.

Every refusal that costs nothing (loading, stalled, this client's share
taken, no room) comes before the prefix is tokenized.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from app.config import Config
from app.engine.types import Busy, ContextTooLong, GenerationRequest, TooManyChoices
from app.metrics import ServiceMetrics
from app.validation import ValidationError, context_error

log = logging.getLogger(__name__)


@dataclass
class Service:
    engine: object
    config: Config
    metrics: ServiceMetrics

    def submit(self, request: GenerationRequest, client: str | None = None, *,
               prefix_name: str = "prefix", length_name: str = "length"):
        """Hands a validated request to the engine; raises Busy (ClientBusy for
        a client over its share), ModelUnavailable or ValidationError at once,
        never waits for a slot here. The names are the caller's words for the
        prefix and the length, for a request that does not fit the context."""
        stalled = self.stalled()
        if stalled:
            raise Busy(stalled, self.config.loading_retry_after)
        try:
            return self.engine.submit(request, client=client)
        except ContextTooLong as e:
            raise context_error(e.prefix_tokens, e.length, e.n_ctx, prefix_name=prefix_name,
                                length_name=length_name) from None
        except TooManyChoices as e:
            raise ValidationError(str(e), "n") from None

    def stalled(self) -> str | None:
        """Why the engine counts as wedged, or None while it keeps up."""
        seconds = self.engine.stalled_for()
        if seconds < self.config.stall_timeout:
            return None
        return (f"the generation engine has taken no step for {seconds:.0f} s with work "
                f"pending")

    def n_ctx(self) -> int:
        return int(self.engine.info["hparams"]["n_ctx"])

    def info(self) -> dict:
        """The engine's model card and state, with every limit in force."""
        engine_info = dict(self.engine.info)
        limits = {**engine_info.pop("limits", {}), **self.config.limits(), **_request_limits()}
        return {**engine_info, "model": self.engine.model_name, "state": self.engine.state,
                "error": self.engine.error, "limits": limits,
                "graph_ops": _graph_ops(self.engine)}


def _request_limits() -> dict:
    from app import validation
    return {
        "max_prefix_characters": validation.MAX_PREFIX_CHARS,
        "max_length": validation.MAX_LENGTH,
        "max_temperature": validation.MAX_TEMPERATURE,
        "max_top_k": validation.MAX_TOP_K,
        # Episodes per request: at most this, and no more than max_batch slots.
        "max_n": validation.MAX_N,
    }


def _graph_ops(engine):
    try:
        return engine.graph_ops()
    except Exception:  # not loaded yet, or failed
        return None
