"""What reduced precision costs in quality: a checkpoint's perplexity on a
text file with the weights in float32, bfloat16 or int8 (the native decoder)
and the key/value cache in float32 or bfloat16, and how far each setting's
next-token distributions move from all-float32.

    python benchmarks/precision.py --checkpoint-dir checkpoint --run-name run1 --text data/val.txt
"""
from __future__ import annotations

import argparse
import math

import numpy as np

from app.engine.checkpoint import WeightReader, open_checkpoint
from app.engine.graph import DecoderGraph
from app.engine.native import NativeDecoder
from app.engine.text import Tokenizer

# (weights, cache): the reference first, the engine's default last.
SETTINGS = [("float32", "float32"), ("float32", "bfloat16"), ("bfloat16", "float32"),
            ("bfloat16", "bfloat16"), ("int8", "float32"), ("int8", "bfloat16")]


def decoder(checkpoint, weights: str, cache: str, window: int):
    if weights == "int8":
        return NativeDecoder(checkpoint.hparams, pool_size=window, threads=2, cache_dtype=cache)
    return DecoderGraph(checkpoint.hparams, pool_size=window, threads=2, cache_dtype=cache,
                        weight_dtype=weights)


def log_probabilities(graph, tokens: list[int], window: int) -> list[np.ndarray]:
    """Next-token log-probabilities ([T, V] float64) over consecutive windows of the text."""
    windows = []
    for start in range(0, len(tokens) - 1, window):
        inputs = tokens[start:start + window + 1][:-1]
        if not inputs:
            break
        places = np.arange(len(inputs), dtype=np.int32)[None]
        logits = graph.forward(np.array([inputs], np.int32), places, places, places,
                               all_logits=True)[0].astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        windows.append(logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True)))
    return windows


def compare(tokens: list[int], window: int, reference: list[np.ndarray],
            ours: list[np.ndarray]) -> dict:
    """Perplexity, mean KL(reference || ours) per token, and how often the
    most likely next token is the same."""
    nll, kl, same, count = 0.0, 0.0, 0, 0
    for i, (ref, our) in enumerate(zip(reference, ours)):
        targets = np.array(tokens[i * window + 1:i * window + 1 + len(our)])
        nll -= our[np.arange(len(targets)), targets].sum()
        kl += (np.exp(ref) * (ref - our)).sum()
        same += int((ref.argmax(-1) == our.argmax(-1)).sum())
        count += len(targets)
    return {"perplexity": math.exp(nll / count), "kl": kl / count, "top1": same / count,
            "tokens": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", default="checkpoint")
    parser.add_argument("--run-name", default="run1")
    parser.add_argument("--text", default="data/val.txt")
    parser.add_argument("--window", type=int, default=1024, help="tokens of context per window")
    parser.add_argument("--max-tokens", type=int, default=50_000)
    args = parser.parse_args()

    checkpoint = open_checkpoint(args.checkpoint_dir, args.run_name)
    tokenizer = Tokenizer(checkpoint.run_dir, checkpoint.hparams.n_vocab)
    with open(args.text, encoding="utf-8") as f:
        tokens = tokenizer.encode(f.read())[:args.max_tokens + 1]
    window = min(args.window, checkpoint.hparams.n_ctx)
    reference, base = None, None
    print(f"{checkpoint.path}, {len(tokens) - 1} tokens of {args.text}, windows of {window}")
    print(f"{'weights':>9} {'cache':>9} {'perplexity':>11} {'change':>8} "
          f"{'KL/token':>9} {'same top-1':>10}")
    for weights, cache in SETTINGS:
        graph = decoder(checkpoint, weights, cache, window)
        graph.load_weights(WeightReader(checkpoint))
        ours = log_probabilities(graph, tokens, window)
        graph.close()
        reference = reference or ours
        result = compare(tokens, window, reference, ours)
        base = base or result["perplexity"]
        print(f"{weights:>9} {cache:>9} {result['perplexity']:>11.4f} "
              f"{result['perplexity'] / base - 1:>+8.3%} {result['kl']:>9.2e} "
              f"{result['top1']:>10.2%}")
    print(f"rerun: .venv/bin/python benchmarks/precision.py --checkpoint-dir {args.checkpoint_dir} "
          f"--run-name {args.run_name} --text {args.text}")


if __name__ == "__main__":
    main()
