"""A GPT-2-small-shaped checkpoint that computes exactly what a trained smaller
model computes, for speed figures that depend on what a model predicts.

Speculative decoding's speed-up depends on how often drafts are right, so it
must be measured on a trained model, and its cost on GPT-2 small's shape.
Training 124M parameters takes days on two cores; the demo model (`make
model`) trains in minutes. This grows it to GPT-2 small's exact shape
without changing its function:

- the residual stream holds `copies` copies of the small model's (768 = 3 x 256),
  so every layer norm sees the same mean and variance;
- each weight matrix is tiled over the copies and divided by their number on
  its input side, so every copy of every head, hidden unit and output is the
  small model's own;
- the layers past the small model's are zero: they add nothing to the stream;
- the final layer norm is scaled by 1/copies so that the tied embedding's
  logits equal the small model's; tokens past its vocabulary get logit 0 and
  are never sampled (the tokenizer does not have them).

    python benchmarks/grow_model.py --source checkpoint/run1 --output build/bench/grown/run1
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from app.engine.corpus_drafts import TABLE_NAME

GPT2_SMALL = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_ctx": 1024, "n_vocab": 50257}


def grown_weights(small: dict[str, np.ndarray], hparams: dict, target: dict) -> dict[str, np.ndarray]:
    e, big = hparams["n_embd"], target["n_embd"]
    copies = big // e
    if big % e or target["n_head"] != hparams["n_head"] * copies or target["n_layer"] < hparams["n_layer"]:
        raise ValueError("the target must hold a whole number of copies of the model, head for head")

    def stream(vector):       # [..., e] -> [..., copies * e]
        return np.concatenate([vector] * copies, axis=-1)

    def matrix(w, parts):      # [1, e_in, parts * e_out] -> [1, copies * e_in, parts * copies * e_out]
        blocks = np.split(w[0], parts, axis=-1)  # q, k, v (or the whole output)
        out = np.concatenate([np.concatenate([b] * copies, axis=-1) for b in blocks], axis=-1)
        return (np.concatenate([out] * copies, axis=0) / copies)[None]

    def bias(b, parts):
        return np.concatenate([stream(p) for p in np.split(b, parts)])

    wte = np.zeros((target["n_vocab"], big), np.float32)
    wte[:hparams["n_vocab"]] = stream(small["model/wte"])
    wpe = np.zeros((target["n_ctx"], big), np.float32)
    wpe[:hparams["n_ctx"]] = stream(small["model/wpe"])
    out = {"model/wte": wte, "model/wpe": wpe,
           "model/ln_f/g": stream(small["model/ln_f/g"]) / copies,
           "model/ln_f/b": stream(small["model/ln_f/b"]) / copies}
    for i in range(target["n_layer"]):
        h = f"model/h{i}/"
        if i < hparams["n_layer"]:
            layer = {
                "ln_1/g": stream(small[h + "ln_1/g"]), "ln_1/b": stream(small[h + "ln_1/b"]),
                "ln_2/g": stream(small[h + "ln_2/g"]), "ln_2/b": stream(small[h + "ln_2/b"]),
                "attn/c_attn/w": matrix(small[h + "attn/c_attn/w"], 3),
                "attn/c_attn/b": bias(small[h + "attn/c_attn/b"], 3),
                "attn/c_proj/w": matrix(small[h + "attn/c_proj/w"], 1),
                "attn/c_proj/b": stream(small[h + "attn/c_proj/b"]),
                "mlp/c_fc/w": matrix(small[h + "mlp/c_fc/w"], 1),
                "mlp/c_fc/b": stream(small[h + "mlp/c_fc/b"]),
                "mlp/c_proj/w": matrix(small[h + "mlp/c_proj/w"], 1),
                "mlp/c_proj/b": stream(small[h + "mlp/c_proj/b"]),
            }
        else:  # adds nothing to the residual stream
            layer = {"ln_1/g": np.ones(big), "ln_1/b": np.zeros(big),
                     "ln_2/g": np.ones(big), "ln_2/b": np.zeros(big),
                     "attn/c_attn/w": np.zeros((1, big, 3 * big)), "attn/c_attn/b": np.zeros(3 * big),
                     "attn/c_proj/w": np.zeros((1, big, big)), "attn/c_proj/b": np.zeros(big),
                     "mlp/c_fc/w": np.zeros((1, big, 4 * big)), "mlp/c_fc/b": np.zeros(4 * big),
                     "mlp/c_proj/w": np.zeros((1, 4 * big, big)), "mlp/c_proj/b": np.zeros(big)}
        out.update({h + name: np.asarray(value, np.float32) for name, value in layer.items()})
    return out


def save_checkpoint(weights: dict[str, np.ndarray], run_dir: str) -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in sorted(weights.items())]
        saver = tf.compat.v1.train.Saver(var_list={v.op.name: v for v in variables},
                                         save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, os.path.join(run_dir, "model.ckpt"))


def grow(source: str, output: str, target: dict = GPT2_SMALL) -> None:
    with open(os.path.join(source, "hparams.json")) as f:
        hparams = json.load(f)
    import tensorflow as tf  # after the cheap checks: its start-up notes go to stderr
    latest = tf.train.latest_checkpoint(source)
    if latest is None:
        raise ValueError(f"no checkpoint in {source}")
    reader = tf.train.load_checkpoint(latest)
    small = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
             if name.startswith("model/")}
    weights = grown_weights(small, hparams, target)
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    building = tempfile.mkdtemp(dir=parent, prefix=".grown-")
    try:
        for name in ("encoder.json", "vocab.bpe", TABLE_NAME):
            if name == TABLE_NAME and not os.path.exists(os.path.join(source, name)):
                continue  # a run trained without a draft table
            shutil.copy(os.path.join(source, name), building)
        with open(os.path.join(building, "hparams.json"), "w") as f:
            json.dump(target, f, indent=2)
        save_checkpoint(weights, building)
        if os.path.isdir(output):
            shutil.rmtree(output)
        os.replace(building, output)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="checkpoint/run1", help="a trained run folder")
    parser.add_argument("--output", default="build/bench/grown/run1")
    args = parser.parse_args()
    try:
        grow(args.source, args.output)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot grow {args.source}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: GPT-2 small's shape, {args.source}'s function")
    return 0


if __name__ == "__main__":
    sys.exit(main())
