"""The int8 native decoder: close to gpt-2-simple's float32 logits, the AVX-512,
AVX2 and generic builds bit for bit the same, seeded requests the same alone and
batched, and clear errors for what it cannot do."""
import os

import numpy as np
import pytest

from app.engine import Engine, GenerationRequest
from app.engine import native
from app.engine.checkpoint import WeightReader
from app.engine.native import NativeDecoder
from app.engine.packed_weights import KernelUnavailable
from engine_models import PROMPT, prompt_logits, reference_logits


def build(variant):
    """A build as a test parameter, skipped on a CPU that cannot run it."""
    missing = sorted(native.REQUIRED_FLAGS[variant] - native.cpu_flags())
    return pytest.param(variant, marks=pytest.mark.skipif(
        bool(missing), reason=f"this CPU has no {', '.join(missing)}"))


BUILDS = [build(variant) for variant in native.VARIANTS]


def decoder(checkpoint, variant=None, cache_dtype="float32"):
    d = NativeDecoder(checkpoint.hparams, pool_size=2048, threads=2, cache_dtype=cache_dtype,
                      variant=variant)
    d.load_weights(WeightReader(checkpoint))
    return d


def all_logits(d, tokens, base=0):
    return prompt_logits(d, tokens, base, all_logits=True)[0]


@pytest.mark.parametrize("cache_dtype", ["float32", "bfloat16"])
def test_int8_logits_stay_close_to_float32(perturbed_model, cache_dtype):
    _, checkpoint, tokenizer = perturbed_model
    tokens = tokenizer.encode(PROMPT)
    expected = reference_logits(checkpoint, tokens)
    ours = all_logits(decoder(checkpoint, cache_dtype=cache_dtype), tokens)
    assert expected.std() > 0.5  # the perturbed model's logits carry real signal
    error = np.sqrt(np.mean((ours - expected) ** 2)) / expected.std()
    assert error < 0.02, error
    agreement = np.mean(ours.argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.9, agreement


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("cache_dtype", ["float32", "bfloat16"])
def test_the_cache_pool_takes_memory_only_as_places_are_written(perturbed_model, cache_dtype):
    _, checkpoint, tokenizer = perturbed_model
    hp = checkpoint.hparams
    places = 200_000
    pool_bytes = hp.n_layer * 2 * places * hp.n_embd * (2 if cache_dtype == "bfloat16" else 4)
    before = resident_bytes()
    d = NativeDecoder(hp, pool_size=places, threads=2, cache_dtype=cache_dtype)
    assert resident_bytes() - before < pool_bytes / 10, (resident_bytes() - before, pool_bytes)
    d.load_weights(WeightReader(checkpoint))
    tokens = tokenizer.encode(PROMPT)
    logits = prompt_logits(d, tokens, base=places - len(tokens) - 16, all_logits=True)[0]
    assert np.isfinite(logits).all()  # places at the far end of the pool are there when written
    d.close()


def test_weights_take_8_5_bits_each(perturbed_model):
    _, checkpoint, _ = perturbed_model
    hp = checkpoint.hparams
    matrices = hp.n_vocab * hp.n_embd + hp.n_layer * 12 * hp.n_embd * hp.n_embd
    assert decoder(checkpoint).weight_bytes() == pytest.approx(matrices * 8.5 / 8, rel=0.01)


@pytest.mark.parametrize("variant", [b for b in BUILDS if b.values[0] != "generic"])
def test_vector_and_generic_builds_give_identical_logits(perturbed_model, variant):
    _, checkpoint, tokenizer = perturbed_model
    tokens = tokenizer.encode(PROMPT)
    for cache_dtype in ("float32", "bfloat16"):
        fast = all_logits(decoder(checkpoint, variant, cache_dtype), tokens)
        plain = all_logits(decoder(checkpoint, "generic", cache_dtype), tokens)
        assert np.array_equal(fast, plain)


@pytest.mark.parametrize("variant", BUILDS)
def test_a_row_is_bit_identical_alone_and_batched(perturbed_model, variant):
    _, checkpoint, tokenizer = perturbed_model
    d = decoder(checkpoint, variant)
    rng = np.random.default_rng(1)
    lengths = [3, 30, 7, 90, 12, 55]
    for i, length in enumerate(lengths):
        all_logits(d, rng.integers(0, tokenizer.vocab_size, length).tolist(), 300 * i)

    def step(rows):
        kv_len = max(lengths[i] for i in rows) + 1
        read_at = np.stack([np.resize(300 * i + np.arange(lengths[i] + 1), kv_len) for i in rows])
        return d.forward(np.full((len(rows), 1), 5), np.array([[lengths[i]] for i in rows]),
                         np.array([[300 * i + lengths[i]] for i in rows]), read_at)

    alone = {i: step([i])[0] for i in range(len(lengths))}
    for rows in ([0, 1], [5, 4, 3, 2, 1, 0], [2, 4], [1, 3, 5, 0, 2]):
        for row, logits in zip(rows, step(rows)):
            assert np.array_equal(logits, alone[row]), (rows, row)


@pytest.mark.parametrize("variant", BUILDS)
def test_rows_of_any_mix_give_the_logits_of_one_token_at_a_time(perturbed_model, variant):
    """A prompt read in uneven chunks next to other sequences' tokens and
    drafts (the scheduler's steps) gives, row for row, the logits of feeding
    the same tokens one at a time."""
    _, checkpoint, tokenizer = perturbed_model
    tokens = np.random.default_rng(2).integers(0, tokenizer.vocab_size, 40)
    one_at_a_time = decoder(checkpoint, variant)
    expected = np.stack([one_at_a_time.forward_rows(tokens[p:p + 1], [p], [p], [0],
                                                    np.arange(64)[None], [0])[0]
                         for p in range(len(tokens))])
    d = decoder(checkpoint, variant)
    d.forward_rows(tokens[:5], np.arange(5), 500 + np.arange(5), np.zeros(5),  # a neighbour's prompt
                   (500 + np.arange(64))[None], [4])
    neighbour = (500 + np.arange(64))[None]
    got, start = [], 0
    for chunk in (1, 7, 3, 16, 13):
        rows = np.arange(start, start + chunk)
        both = np.concatenate([rows, [5, 6]])  # the neighbour's token and one draft, at the end
        logits = d.forward_rows(np.concatenate([tokens[rows], [3, 9]]), both,
                                np.concatenate([rows, [505, 506]]), [0] * chunk + [1, 1],
                                np.concatenate([np.arange(64)[None], neighbour]),
                                np.arange(chunk + 2))
        got.append(logits[:chunk])
        start += chunk
    assert np.array_equal(np.concatenate(got), expected)


def test_rows_that_name_no_sequence_or_output_are_refused(perturbed_model):
    _, checkpoint, _ = perturbed_model
    d = decoder(checkpoint)
    with pytest.raises(ValueError, match="out of range"):
        d.forward_rows([1], [0], [0], [1], np.arange(4)[None], [0])  # sequence 1 of 1
    with pytest.raises(ValueError, match="out of range"):
        d.forward_rows([1], [0], [0], [0], np.arange(4)[None], [1])  # output row 1 of 1


def test_the_kernel_setting_forces_a_build_and_rejects_unknown_ones(monkeypatch):
    monkeypatch.setenv(native.KERNEL_SETTING, "generic")
    assert native.chosen_variant() == "generic"
    monkeypatch.setenv(native.KERNEL_SETTING, "sse2")
    with pytest.raises(KernelUnavailable, match="POKEGEN_KERNEL must be one of avx512, avx2, generic"):
        native.chosen_variant()


def test_a_place_out_of_the_pool_is_refused(perturbed_model):
    _, checkpoint, _ = perturbed_model
    d = decoder(checkpoint)
    with pytest.raises(ValueError, match="out of range"):
        d.forward(np.zeros((1, 1)), np.zeros((1, 1)), np.array([[2048]]), np.array([[0]]))


def test_seeded_requests_match_alone_and_batched_in_the_engine(perturbed_model):
    checkpoint_dir, _, _ = perturbed_model
    engine = Engine(checkpoint_dir, "run1", max_batch=4, weight_dtype="int8")
    engine.start()
    try:
        assert engine.wait_ready(120), engine.error
        assert engine.info["limits"]["weight_dtype"] == "int8"

        def request(seed):
            return GenerationRequest(prefix="Ash and Misty", length=24, seed=seed, stop_at_end=False,
                                     truncate=False)

        alone = engine.submit(request(7)).result(timeout=60).text
        together = [engine.submit(request(seed)) for seed in (7, 8, 9)]
        texts = [g.result(timeout=60).text for g in together]
    finally:
        engine.close()
    assert texts[0] == alone
    assert len(set(texts)) == 3


def test_engine_serves_bfloat16_when_the_library_is_missing(perturbed_model, monkeypatch, tmp_path):
    checkpoint_dir, _, _ = perturbed_model
    monkeypatch.setattr(native, "HERE", str(tmp_path))
    native.load_library.cache_clear()
    engine = Engine(checkpoint_dir, "run1", max_batch=2, weight_dtype="int8")
    engine.start()
    try:
        assert engine.wait_ready(120), engine.error
        assert engine.info["limits"]["weight_dtype"] == "bfloat16"
    finally:
        engine.close()
        native.load_library.cache_clear()
