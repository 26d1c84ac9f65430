"""Text around the model: gpt-2-simple's BPE tokenizer, UTF-8 safe streaming
of token pieces, and cutting an episode back to its last full sentence."""
from __future__ import annotations

import codecs
import re
import sys
import threading
from collections import OrderedDict

from pokegen.gpt2_format import END_OF_TEXT

from .checkpoint import ModelLoadError, first_line

# The merges of words seen lately are kept, up to this many bytes: a service
# sees endless new words, some of them as long as a whole prefix.
WORD_CACHE_BYTES = 8 * 2**20


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
        # gpt-2-simple's own memo grows without bound: it is replaced by one
        # that keeps nothing, and self.words bounds what is kept by bytes.
        self.encoder.cache = _NoMemo()
        self.words = WordCache(WORD_CACHE_BYTES)

    def encode(self, text: str) -> list[int]:
        """gpt-2-simple's Encoder.encode, with the word cache in front of its BPE."""
        encoder, byte_encoder = self.encoder, self.encoder.byte_encoder
        tokens: list[int] = []
        for word in encoder.pat.findall(text):
            symbols = "".join(byte_encoder[b] for b in word.encode("utf-8"))
            merged = self.words.get(symbols)
            if merged is None:
                merged = encoder.bpe(symbols)
                self.words.put(symbols, merged)
            tokens.extend(encoder.encoder[piece] for piece in merged.split(" "))
        return tokens

    def decode(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes[t] or b"" for t in tokens).decode("utf-8", errors="replace")


class _NoMemo(dict):
    """A memo that never remembers (gpt-2-simple's bpe() writes to it)."""

    def __setitem__(self, key, value):
        pass


class WordCache:
    """The merged form of recently seen words, least recently used dropped
    first, holding at most `max_bytes` (keys, values and their entries).
    HTTP threads share it; merging runs outside its lock."""

    ENTRY_OVERHEAD = 120  # an OrderedDict slot and its link, roughly

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, word: str) -> str | None:
        with self._lock:
            merged = self._entries.get(word)
            if merged is not None:
                self._entries.move_to_end(word)
            return merged

    def put(self, word: str, merged: str) -> None:
        size = self._size(word, merged)
        if size > self.max_bytes // 64:
            return  # a word this long is rarely seen twice: not worth the room of many
        with self._lock:
            if word in self._entries:
                return
            self._entries[word] = merged
            self.bytes += size
            while self.bytes > self.max_bytes:
                old_word, old_merged = self._entries.popitem(last=False)
                self.bytes -= self._size(old_word, old_merged)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def _size(cls, word: str, merged: str) -> int:
        return sys.getsizeof(word) + sys.getsizeof(merged) + cls.ENTRY_OVERHEAD


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
# (so "3.5" or "Pok.mon" do not count). A match starts only at the first mark
# of a run and never gives back what it took, so a long run of marks is read
# once, not once per mark (the text comes from the model: it can be anything).
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]++[\"'\u201d\u2019)\]]*+(?=\s|$)")


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
