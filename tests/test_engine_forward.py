"""The engine's own GPT-2 graph against gpt-2-simple's model: same logits
for the same checkpoint, with and without the key/value cache."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from gpt_2_simple.src import model as gpt2_model

from app.engine import Engine, GenerationRequest
from app.engine.checkpoint import WeightReader, open_checkpoint
from app.engine.graph import DecoderGraph
from app.engine.text import Tokenizer
from engine_models import make_run, perturb_weights

PROMPT = "Ash and Pikachu reach Viridian City, where Nurse Joy heals the injured Pokemon."


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    checkpoint_dir = str(tmp_path_factory.mktemp("checkpoint"))
    run_dir = make_run(checkpoint_dir)
    perturb_weights(run_dir)
    checkpoint = open_checkpoint(checkpoint_dir, "run1")
    graph = DecoderGraph(checkpoint.hparams, n_slots=3, threads=2)
    graph.load_weights(WeightReader(checkpoint))
    tokenizer = Tokenizer(run_dir, checkpoint.hparams.n_vocab)
    yield checkpoint_dir, checkpoint, graph, tokenizer
    graph.close()


def reference_logits(checkpoint, tokens):
    hparams = gpt2_model.default_hparams()
    with open(os.path.join(checkpoint.run_dir, "hparams.json")) as f:
        hparams.override_from_dict(json.load(f))
    graph = tf.Graph()
    with graph.as_default():
        context = tf.compat.v1.placeholder(tf.int32, [1, None])
        output = gpt2_model.model(hparams=hparams, X=context)
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, checkpoint.path)
            return sess.run(output["logits"], {context: [tokens]})[0]


def test_prompt_logits_match_gpt2_simple(run):
    _, checkpoint, graph, tokenizer = run
    tokens = tokenizer.encode(PROMPT)
    expected = reference_logits(checkpoint, tokens)
    ours = graph.forward(np.array([tokens]), np.arange(len(tokens))[None], np.array([1]),
                         all_logits=True)[0]
    assert expected.std() > 0.5  # the perturbed model's logits carry real signal
    np.testing.assert_allclose(ours, expected, atol=2e-4 * np.abs(expected).max())


def test_cached_steps_match_the_full_pass_in_any_slot_and_batch(run):
    _, checkpoint, graph, tokenizer = run
    tokens = tokenizer.encode(PROMPT)
    full = graph.forward(np.array([tokens]), np.arange(len(tokens))[None], np.array([0]),
                         all_logits=True)[0]
    # Two sequences share the batch: ours in slot 2, another at a different
    # position in slot 0, so masking and slot addressing both matter.
    other = tokenizer.encode("Team Rocket blasts off again and again and again")
    graph.forward(np.array([tokens[:4]]), np.arange(4)[None], np.array([2]))
    graph.forward(np.array([other]), np.arange(len(other))[None], np.array([0]))
    for t in range(4, len(tokens)):
        step = graph.forward(np.array([[tokens[t]], [other[t % len(other)]]]),
                             np.array([[t], [len(other) + t - 4]]), np.array([2, 0]))
        np.testing.assert_allclose(step[0], full[t], atol=1e-4 * np.abs(full).max())


def test_greedy_engine_output_is_argmax_of_the_forward_pass(run):
    checkpoint_dir, checkpoint, graph, tokenizer = run
    tokens = tokenizer.encode(PROMPT)
    for _ in range(12):
        logits = graph.forward(np.array([tokens]), np.arange(len(tokens))[None], np.array([1]))[0]
        tokens.append(int(np.argmax(logits[:tokenizer.vocab_size])))
    expected = tokenizer.decode(tokens[len(tokenizer.encode(PROMPT)):])

    engine = Engine(checkpoint_dir, "run1", max_batch=2)
    engine.start()
    try:
        assert engine.wait_ready(120), engine.error
        result = engine.submit(GenerationRequest(
            prefix=PROMPT, length=12, top_k=1, truncate=False, include_prefix=False,
            stop_at_end=False)).result(timeout=60)
    finally:
        engine.close()
    assert result.tokens == 12
    assert result.text == expected
