"""The engine's pure helpers: per-request sampling, sentence cutting, and
UTF-8 safe streaming of token pieces."""
import re
import time

import numpy as np
import pytest

from app.engine.repetition import RepetitionControl
from app.engine.sampling import TokenSampler, top_k_ids
from app.engine.text import PieceDecoder, cut_to_last_sentence


def draws(sampler, logits, n=400):
    return [sampler(logits) for _ in range(n)]


@pytest.fixture
def logits():
    return np.random.default_rng(3).normal(size=500).astype(np.float32) * 3


def test_top_k_one_is_argmax_whatever_the_temperature(logits):
    sampler = TokenSampler(temperature=5.0, top_k=1, top_p=1.0, seed=None, vocab_size=500)
    assert set(draws(sampler, logits, 50)) == {int(np.argmax(logits))}


def test_top_k_keeps_only_the_k_highest(logits):
    top5 = set(np.argsort(-logits)[:5].tolist())
    sampler = TokenSampler(temperature=1.0, top_k=5, top_p=1.0, seed=1, vocab_size=500)
    seen = set(draws(sampler, logits))
    assert seen <= top5 and len(seen) > 1


def top_k_by_sorting(logits, k):
    """The definition: highest first, ties by lowest id; the first k, by id."""
    return np.sort(np.lexsort((np.arange(logits.size), -logits))[:k])


@pytest.mark.parametrize("size", [50, 500, 50257])
@pytest.mark.parametrize("k", [1, 2, 40, 391, 392, 1000])
def test_top_k_ids_are_the_k_largest_with_ties_by_lowest_id(size, k):
    rng = np.random.default_rng(size + k)
    k = min(k, size - 1)
    for rounded in (False, True):  # rounded: many ties, at the k-th among them
        logits = rng.normal(size=size) * 3
        logits = np.round(logits) if rounded else logits
        logits[rng.integers(0, size, size // 10)] = -np.inf  # banned tokens
        assert np.array_equal(top_k_ids(logits, k), top_k_by_sorting(logits, k))


def test_top_p_keeps_the_smallest_head_reaching_the_mass(logits):
    probs = np.exp(logits - logits.max()).astype(np.float64)
    probs /= probs.sum()
    order = np.argsort(-probs)
    head = order[:int(np.searchsorted(np.cumsum(probs[order]), 0.5)) + 1]
    sampler = TokenSampler(temperature=1.0, top_k=0, top_p=0.5, seed=2, vocab_size=500)
    seen = set(draws(sampler, logits))
    assert seen <= set(head.tolist()) and len(seen) > 1


def test_low_temperature_concentrates_and_high_temperature_spreads(logits):
    cold = TokenSampler(temperature=0.05, top_k=0, top_p=1.0, seed=4, vocab_size=500)
    hot = TokenSampler(temperature=3.0, top_k=0, top_p=1.0, seed=4, vocab_size=500)
    assert len(set(draws(cold, logits))) <= 3
    assert len(set(draws(hot, logits))) > 50


def test_same_seed_same_tokens_and_other_seed_other_tokens(logits):
    def run(seed):
        return draws(TokenSampler(1.0, 40, 0.9, seed, 500), logits, 60)
    assert run(11) == run(11)
    assert run(11) != run(12)


def test_ids_past_the_vocabulary_are_never_chosen(logits):
    logits = logits.copy()
    logits[450:] = 100.0  # the graph's extra rows, beyond the tokenizer
    sampler = TokenSampler(1.0, 0, 1.0, 5, vocab_size=450)
    assert max(draws(sampler, logits)) < 450


@pytest.mark.parametrize("text, cut", [
    ("Ash won. Then Misty", "Ash won."),
    ("Ash won! Misty cried? Brock", "Ash won! Misty cried?"),
    ('He said "Go!" and the', 'He said "Go!"'),
    ("It costs 3.5 coins and", "It costs 3.5 coins and"),  # no sentence end: kept whole
    ("They left...", "They left..."),
    ("Run!!! Then... now?! He said \"no.\") So", 'Run!!! Then... now?! He said "no.")'),
    ("Wait..x. Go", "Wait..x."),
    ("", ""),
])
def test_cut_to_last_sentence(text, cut):
    assert cut_to_last_sentence(text) == cut


def _cpu_seconds(function, *args) -> float:
    """The least CPU time of three calls: other work on the machine only adds to it."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        function(*args)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("unit", [".!?", ".", "?!", '."', ".)'", "!\u201d"])
def test_cutting_is_linear_on_long_runs_of_sentence_marks(unit):
    # Model output can be a long run of marks with no space after it; the
    # cut runs in the scheduler's thread. A linear reference (one scan for the
    # marks) bounds it: a cut that backtracks is hundreds of times slower at 20k.
    for size in (20_000, 100_000):
        text = "Ash" + unit * (size // len(unit)) + "x"
        reference = _cpu_seconds(re.findall, r"[.!?]", text)
        assert cut_to_last_sentence(text) == text  # no space after the run: no sentence end
        assert _cpu_seconds(cut_to_last_sentence, text) < 20 * reference + 0.02, size


class FakeTokenizer:
    # token 0 is "é" split over two tokens; token 1 is "a"
    token_bytes = ["é".encode()[:1], "é".encode()[1:], b"a"]


def test_piece_decoder_holds_back_a_split_character():
    decoder = PieceDecoder(FakeTokenizer())
    assert [decoder.feed(t) for t in (2, 0, 1, 2)] == ["a", "", "é", "a"]


def test_piece_decoder_flushes_a_dangling_byte_as_a_replacement():
    decoder = PieceDecoder(FakeTokenizer())
    assert decoder.feed(0) == ""
    assert decoder.flush() == "\ufffd"


# ------------------------------------------------------------ repetition control
def greedy(prompt, **controls):
    return TokenSampler(0.0, 0, 1.0, 0, vocab_size=6,
                        repetition=RepetitionControl(prompt, **controls))


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    row = np.array([2.0, -1.0, 0.5, 1.9, 0.0, -3.0])
    control = RepetitionControl([0, 1, 0], repetition_penalty=2.0)
    shaped = row.copy()
    control.apply(shaped)
    assert shaped.tolist() == [1.0, -2.0, 0.5, 1.9, 0.0, -3.0]  # tokens 0 and 1 were seen
    # Generated tokens count as the prompt's do, once whatever their count: 3 is
    # the best (1.9), then, penalised too (0.95), second to 0 (1.0) for good.
    sampler = greedy([0, 1, 0], repetition_penalty=2.0)
    assert [sampler(row) for _ in range(3)] == [3, 0, 0]
    assert TokenSampler(0.0, 0, 1.0, 0, vocab_size=6)(row) == 0  # without it


def test_frequency_and_presence_penalties_count_generated_tokens_only():
    control = RepetitionControl([5, 5, 5], frequency_penalty=0.5, presence_penalty=0.25)
    for token in (3, 3, 2):
        control.append(token)
    shaped = np.zeros(6)
    control.apply(shaped)
    # 3 written twice: 2 * 0.5 + 0.25; 2 once: 0.5 + 0.25; 5 only in the prompt: untouched.
    assert shaped.tolist() == [0.0, 0.0, -0.75, -1.25, 0.0, 0.0]


def test_no_repeat_ngram_size_forbids_completing_a_seen_ngram():
    row = np.array([0.0, 0.0, 0.0, 5.0, 4.0, 0.0])
    # "1 2 3" is in the prompt and it ends with "1 2": 3 would repeat it.
    assert greedy([1, 2, 3, 0, 1, 2], no_repeat_ngram_size=3)(row) == 4
    assert greedy([1, 2, 3, 0, 2, 1], no_repeat_ngram_size=3)(row) == 3
    # Size 1: no token twice, the prompt included.
    sampler = greedy([3], no_repeat_ngram_size=1)
    assert [sampler(row) for _ in range(3)] == [4, 0, 1]


def test_repetition_state_grows_past_its_first_arrays():
    control = RepetitionControl(list(range(100)), presence_penalty=1.0)
    for token in range(100, 300):
        control.append(token)
    shaped = np.zeros(400)
    control.apply(shaped)
    assert (shaped[:100] == 0).all() and (shaped[100:300] == -1).all() and (shaped[300:] == 0).all()


# -------------------------------------------------------------- top_p, no top_k
def nucleus_by_sorting_everything(logits, temperature, top_p, draw):
    """top_p as the sampler did before: sort the whole row (highest first, ties by id)."""
    logits = np.asarray(logits, np.float64)
    ids = np.lexsort((np.arange(logits.size), -logits))
    probs = np.exp((logits[ids] - logits.max()) / temperature)
    probs /= probs.sum()
    keep = int(np.count_nonzero(np.cumsum(probs) - probs < top_p))
    ids, probs = ids[:keep], probs[:keep]
    index = int(np.searchsorted(np.cumsum(probs), draw * probs.sum(), side="right"))
    return int(ids[min(index, ids.size - 1)])


@pytest.mark.parametrize("scale,temperature,top_p", [(3.0, 0.7, 0.9), (0.5, 1.0, 0.95),
                                                     (8.0, 0.3, 0.5), (1.0, 5.0, 0.99)])
def test_top_p_alone_chooses_as_sorting_the_whole_vocabulary_would(scale, temperature, top_p):
    rng = np.random.default_rng(int(scale * 10))
    rows = rng.standard_normal((60, 50257)) * scale
    rows[::3, :500] = np.round(rows[::3, :500])  # rows with ties
    sampler = TokenSampler(temperature, 0, top_p, seed=8, vocab_size=50257)
    draws_of_the_same_seed = np.random.default_rng(8)
    for row in rows:
        expected = nucleus_by_sorting_everything(row, temperature, top_p,
                                                 draws_of_the_same_seed.random())
        assert sampler(row) == expected
