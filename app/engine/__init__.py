"""pokegen's generation engine: one copy of the model, a decoding graph built
once, and continuous batching of concurrent requests.

One request, in order:
1. app/validation.py makes the one GenerationRequest (types.py) every route uses.
2. Engine.submit (engine.py) checks the state once, tokenizes the prefix once
   and checks it fits the context, then hands a Generation to
3. the RequestLine (admission.py), the one owner of the request's place: it
   takes free slots at once, or waits in line, or refuses; it gives slots back.
4. The Scheduler (scheduler.py) starts admitted requests when the cache pool
   (cache_pool.py) has room, plans each step (schedule), has the StepRunner
   (runner.py) run it on the decoder, and takes the logits (update): sampling,
   drafts, stop strings, and each ended sequence reported to the line.
5. The Generation (generation.py) streams the pieces to the caller and makes
   the answer it asked for (truncated, with or without the prefix).
"""
from .engine import Engine
from .generation import Generation
from .types import (DEFAULT_PREFIX, Busy, Choice, ClientBusy, GenerationRequest,
                    GenerationResult, ModelLoadError)

__all__ = ["Engine", "Generation", "GenerationRequest", "GenerationResult", "Choice", "Busy",
           "ClientBusy",
           "ModelLoadError", "DEFAULT_PREFIX"]
