"""Small checkpoints for the engine tests, made with the project's own
scratch-model builder (a run folder gpt-2-simple can load)."""
from __future__ import annotations

import os

import numpy as np

import scratch_model


def make_run(checkpoint_dir: str, run_name: str = "run1", preset: str = "tiny", seed: int = 0) -> str:
    run_dir = os.path.join(checkpoint_dir, run_name)
    scratch_model.create_model_dir(run_dir, preset, seed=seed)
    return run_dir


def started_engine(checkpoint_dir: str, **options):
    """An engine on checkpoint_dir/run1 (Engine's keyword options), loaded and ready."""
    from app.engine import Engine

    engine = Engine(checkpoint_dir, "run1", **options)
    engine.start()
    assert engine.wait_ready(120), engine.error
    return engine


def perturbed_model(checkpoint_dir: str):
    """A tiny run with every weight perturbed: (checkpoint_dir, checkpoint, tokenizer)."""
    from app.engine.checkpoint import open_checkpoint
    from app.engine.text import Tokenizer

    run_dir = make_run(checkpoint_dir)
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
