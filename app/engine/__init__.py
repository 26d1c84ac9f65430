"""pokegen's generation engine: one copy of the model, a decoding graph built
once, and continuous batching of concurrent requests."""
from .engine import Engine
from .generation import Generation
from .types import (DEFAULT_PREFIX, Busy, Choice, ClientBusy, GenerationRequest,
                    GenerationResult, ModelLoadError)

__all__ = ["Engine", "Generation", "GenerationRequest", "GenerationResult", "Choice", "Busy",
           "ClientBusy",
           "ModelLoadError", "DEFAULT_PREFIX"]
