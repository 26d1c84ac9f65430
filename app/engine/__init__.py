"""pokegen's generation engine: one copy of the model, a decoding graph built
once, and continuous batching of concurrent requests."""
from .engine import Engine
from .generation import Generation
from .types import (DEFAULT_PREFIX, Busy, ClientBusy, GenerationRequest, GenerationResult,
                    ModelLoadError)

__all__ = ["Engine", "Generation", "GenerationRequest", "GenerationResult", "Busy", "ClientBusy",
           "ModelLoadError", "DEFAULT_PREFIX"]
