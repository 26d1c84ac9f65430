"""Text around the model: gpt-2-simple's BPE tokenizer, UTF-8 safe streaming
of token pieces, and cutting an episode back to its last full sentence."""
from __future__ import annotations

import codecs
import re
import threading

from .checkpoint import END_OF_TEXT, ModelLoadError, first_line

# The encoder memoises the BPE of every distinct word it has seen; a service
# sees endless new words, so the memo is emptied when it gets this big.
BPE_CACHE_LIMIT = 20_000


class Tokenizer:
    def __init__(self, run_dir: str, n_vocab: int):
        from gpt_2_simple.src.encoder import get_encoder

        try:
            self.encoder = get_encoder(run_dir)
        except FileNotFoundError as e:
            raise ModelLoadError(f"tokenizer file missing in {run_dir}: {e.filename}") from None
        except Exception as e:
            raise ModelLoadError(f"tokenizer files in {run_dir} are not valid: {first_line(e)}") from None
        ids = self.encoder.encoder.values()
        if not ids or max(ids) >= n_vocab or min(ids) < 0:
            raise ModelLoadError(f"encoder.json in {run_dir} does not fit n_vocab={n_vocab}")
        self.vocab_size = max(ids) + 1
        byte_of = self.encoder.byte_decoder
        # Token id -> the raw bytes it stands for; None for ids with no entry.
        self.token_bytes: list[bytes | None] = [None] * self.vocab_size
        for piece, token in self.encoder.encoder.items():
            self.token_bytes[token] = bytes(byte_of[c] for c in piece)
        self.end_of_text = self.encoder.encoder.get(END_OF_TEXT)
        self.encoder.decoder = None  # token_bytes replaces it: one table in memory, not two
        self._lock = threading.Lock()  # HTTP threads encode at once; the memo is shared

    def encode(self, text: str) -> list[int]:
        with self._lock:
            if len(self.encoder.cache) > BPE_CACHE_LIMIT:
                self.encoder.cache.clear()
            return self.encoder.encode(text)

    def decode(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes[t] or b"" for t in tokens).decode("utf-8", errors="replace")


class PieceDecoder:
    """Turns tokens into text pieces as they come, holding back the bytes of
    a character that is split across tokens until it is complete."""

    def __init__(self, tokenizer: Tokenizer):
        self.token_bytes = tokenizer.token_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self.decoder.decode(self.token_bytes[token] or b"")

    def flush(self) -> str:
        return self.decoder.decode(b"", final=True)


# A sentence ends with . ! or ? (possibly several, as in "?!" or "..."),
# optionally followed by closing quotes or brackets, then a space or the end
# (so "3.5" or "Pok.mon" do not count).
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s|$)")


def cut_to_last_sentence(text: str) -> str:
    """Text up to the end of its last complete sentence.

    Text with no sentence end at all is returned unchanged: a fragment is
    more useful to the reader than nothing."""
    last = None
    for match in _SENTENCE_END.finditer(text):
        last = match
    if last is None:
        return text
    return text[:last.end()]
