"""The tokenizer: exactly gpt-2-simple's ids, with a word cache bounded by bytes.

Property tests compare app.engine.text.Tokenizer with gpt-2-simple's own
Encoder on GPT-2's real vocabulary (`make gpt2-vocab`, run by `make test`) and
on the vocabularies pokegen.new_model builds. The Rust `tokenizers` BPE is not
used to encode: its pre-tokenizer's Unicode tables are older than those of
gpt-2-simple's `regex`, so letters added to Unicode in recent years split
differently and the ids differ (shown below)."""
import gc
import json
import os
import random
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import text
from pokegen import new_model
from pokegen.service_stack import ROOT

GPT2_VOCAB = os.path.join(ROOT, "build", "gpt2-vocab")

needs_gpt2_vocab = pytest.mark.skipif(
    not os.path.exists(os.path.join(GPT2_VOCAB, "vocab.bpe")),
    reason="GPT-2's vocabulary is fetched by `make gpt2-vocab` (part of `make test`)")

# Text as prefixes come: every Unicode character, with a bias towards words,
# spaces, digits, contractions and punctuation, where the BPE rules differ.
PIECES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", " ", "  ", "\n", "\t",
                     "Pikachu", " Ash", "123", " 4.5", "!?", "...", "\u00a0", "\u3000",
                     "ポケモン", "😀", "<|endoftext|>", "e\u0301"]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
)
TEXTS = st.lists(PIECES, max_size=12).map("".join)


def gpt_2_simple_encoder(vocab_dir):
    from gpt_2_simple.src.encoder import get_encoder
    return get_encoder(vocab_dir)


@pytest.fixture(scope="module")
def scratch_vocabularies(tmp_path_factory):
    """The two kinds pokegen.new_model builds: learned merges only (the tiny
    preset's 4096), and learned plus filler merges up to GPT-2's 50257."""
    folders = []
    for size in (4096, 50257):
        folder = str(tmp_path_factory.mktemp(f"vocab{size}"))
        new_model.train_tokenizer(None, folder, size)
        folders.append(folder)
    return folders


def compare_on(vocab_dir, n_vocab):
    ours = text.Tokenizer(vocab_dir, n_vocab)
    reference = gpt_2_simple_encoder(vocab_dir)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(TEXTS)
    def same_ids(prefix):
        assert ours.encode(prefix) == reference.encode(prefix)
        # A second time: now from the word cache.
        assert ours.encode(prefix) == reference.encode(prefix)

    same_ids()


@needs_gpt2_vocab
def test_ids_are_gpt_2_simples_on_gpt2s_real_vocabulary():
    compare_on(GPT2_VOCAB, 50257)


def test_ids_are_gpt_2_simples_on_scratch_vocabularies(scratch_vocabularies):
    for folder in scratch_vocabularies:
        with open(os.path.join(folder, "encoder.json"), encoding="utf-8") as f:
            n_vocab = len(json.load(f))
        compare_on(folder, n_vocab)


@needs_gpt2_vocab
def test_the_rust_bpe_splits_recent_letters_differently_so_it_is_not_used():
    from tokenizers import Tokenizer, models, pre_tokenizers
    rust = Tokenizer(models.BPE.from_file(os.path.join(GPT2_VOCAB, "encoder.json"),
                                          os.path.join(GPT2_VOCAB, "vocab.bpe")))
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ours = text.Tokenizer(GPT2_VOCAB, 50257)
    # Ordinary text agrees...
    for prefix in ("Pikachu and Ash were", "It's 3.5 km!  Then\n\n\tthey'll go", "ポケモン 😀"):
        assert rust.encode(prefix).ids == ours.encode(prefix)
    # ...but letters newer than the Rust side's Unicode tables (here Armenian,
    # Unicode 11, and Latin, Unicode 14; some 17,000 code points in all) are
    # letters to gpt-2-simple's regex and punctuation to it: before "'s" the
    # words split differently and the ids differ.
    for prefix in ("\u0558's", "Ash\ua7d2's"):
        assert rust.encode(prefix).ids != ours.encode(prefix), prefix


def long_distinct_words(count, length, seed=0):
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [" " + "".join(rng.choice(letters) for _ in range(length)) for _ in range(count)]


def test_a_flood_of_long_distinct_words_keeps_the_cache_within_its_bytes(
        monkeypatch, scratch_vocabularies):
    budget = 256 * 1024
    monkeypatch.setattr(text, "WORD_CACHE_BYTES", budget)
    tokenizer = text.Tokenizer(scratch_vocabularies[0], 4096)
    reference = gpt_2_simple_encoder(scratch_vocabularies[0])
    flood = long_distinct_words(700, 300)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for prefix in flood:
            tokenizer.encode(prefix)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The flood holds several times the budget; the cache kept no more than it.
    flood_bytes = sum(text.WordCache._size(w, reference.bpe(w)) for w in
                      ("".join(reference.byte_encoder[b] for b in p.encode()) for p in flood))
    assert flood_bytes > 3 * budget
    assert tokenizer.words.bytes <= budget
    assert kept <= budget * 1.25, (kept, budget)
    # What it kept are the latest words, and they still give the right ids.
    assert tokenizer.encode(flood[-1]) == reference.encode(flood[-1])
    assert len(tokenizer.words) < len(flood)


def test_the_cache_drops_the_least_recently_used_word_first():
    words = [f"{i:04d}" for i in range(100)]
    cache = text.WordCache(max_bytes=100 * text.WordCache._size("0000", "0 0 0 0"))
    for word in words:
        cache.put(word, " ".join(word))
    assert len(cache) == 100
    assert cache.get(words[0]) == "0 0 0 0"  # now the most recent
    cache.put("xxxx", "x x x x")
    assert cache.get(words[1]) is None and len(cache) == 100
    assert cache.get(words[0]) == "0 0 0 0" and cache.get("xxxx") == "x x x x"
    # A word too long to be worth the room of many is not kept.
    cache.put("y" * 10_000, " ".join("y" * 10_000))
    assert cache.get("y" * 10_000) is None and cache.get(words[2]) is not None
