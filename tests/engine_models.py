"""Checkpoints and engines for the engine tests: private copies of the session's tiny run
(conftest.py's tiny_checkpoint), copies with every weight perturbed, and gpt-2-simple's own
logits and the engine graph's own to compare."""
from __future__ import annotations

import json
import os
import shutil
from unittest import mock

import numpy as np

from live_generation import SLOW_TURNS
from pokegen.service_stack import tiny_checkpoint_dir


# What the forward-pass tests read, and compare logits on.
PROMPT = "Ash and Pikachu reach Viridian City, where Nurse Joy heals the injured Pokemon."


def copy_tiny_run(checkpoint_dir: str, run_name: str = "run1") -> str:
    """A copy of the tiny run in checkpoint_dir/run_name, for a test that changes it."""
    run_dir = os.path.join(checkpoint_dir, run_name)
    shutil.copytree(os.path.join(tiny_checkpoint_dir(), "run1"), run_dir)
    return run_dir


def started_engine(checkpoint_dir: str, slow_turns: bool = False, **options):
    """An engine on checkpoint_dir/run1 (Engine's keyword options), loaded and ready; with
    slow_turns, each decoding turn waits as SLOW_TURNS makes a stack's do, so that a long
    generation is still running when a test looks at it."""
    from app.engine import Engine

    engine = Engine(checkpoint_dir, "run1", **options)
    with mock.patch.dict(os.environ, {k: str(v) for k, v in SLOW_TURNS.items()} if slow_turns else {}):
        engine.start()
        assert engine.wait_ready(120), engine.error
    return engine


def perturbed_copy(checkpoint_dir: str):
    """A tiny run with every weight perturbed: (checkpoint_dir, checkpoint, tokenizer)."""
    from app.engine.checkpoint import open_checkpoint
    from app.engine.text import Tokenizer

    run_dir = copy_tiny_run(checkpoint_dir)
    perturb_weights(run_dir)
    checkpoint = open_checkpoint(checkpoint_dir, "run1")
    return checkpoint_dir, checkpoint, Tokenizer(run_dir, checkpoint.hparams.n_vocab)


def perturb_weights(run_dir: str, seed: int = 0) -> None:
    """Adds noise to every weight, layer norms and biases included (a fresh
    model has them at 1 and 0), so that a forward pass that mishandles any
    of them gives different logits."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(run_dir)
    reader = tf.train.load_checkpoint(path)
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        variables = []
        for name in sorted(reader.get_variable_to_shape_map()):
            value = reader.get_tensor(name)
            if value.dtype.kind == "f":
                scale = 0.3 if value.ndim == 1 else 0.05
                value = value + rng.normal(scale=scale, size=value.shape).astype(value.dtype)
            variables.append(tf.compat.v1.Variable(value, name=name))
        saver = tf.compat.v1.train.Saver(var_list={v.op.name: v for v in variables},
                                         save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, os.path.join(run_dir, "model"), global_step=2)


def reference_logits(checkpoint, tokens, weight_dtype="float32"):
    """gpt-2-simple's logits; with weight_dtype bfloat16, its weight matrices
    rounded to bfloat16 first, as the engine holds them."""
    import ml_dtypes
    import tensorflow as tf
    from gpt_2_simple.src import model as gpt2_model

    hparams = gpt2_model.default_hparams()
    with open(os.path.join(checkpoint.run_dir, "hparams.json")) as f:
        hparams.override_from_dict(json.load(f))
    graph = tf.Graph()
    with graph.as_default():
        context = tf.compat.v1.placeholder(tf.int32, [1, None])
        output = gpt2_model.model(hparams=hparams, X=context)
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, checkpoint.path)
            if weight_dtype == "bfloat16":
                for var in tf.compat.v1.global_variables():
                    if var.op.name.endswith(("/w", "/wte")):
                        rounded = sess.run(var).astype(ml_dtypes.bfloat16).astype(np.float32)
                        var.load(rounded, sess)
            return sess.run(output["logits"], {context: [tokens]})[0]


def at(base, positions):
    """Pool places of a sequence stored contiguously from `base`."""
    return np.asarray(positions, np.int32) + base


def prompt_logits(graph, tokens, base, all_logits=False):
    places = at(base, np.arange(len(tokens)))[None]
    return graph.forward(np.array([tokens]), np.arange(len(tokens))[None], places, places,
                         all_logits=all_logits)
