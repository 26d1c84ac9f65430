"""How much the bfloat16 key/value cache costs in quality: perplexity of a
checkpoint on a text file with the cache in float32 and in bfloat16.

    python benchmarks/cache_precision.py --checkpoint-dir checkpoint --run-name run1 --text data/val.txt
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.engine.checkpoint import WeightReader, open_checkpoint  # noqa: E402
from app.engine.graph import DecoderGraph  # noqa: E402
from app.engine.text import Tokenizer  # noqa: E402


def perplexity(graph: DecoderGraph, tokens: list[int], window: int) -> tuple[float, int]:
    """exp(mean negative log-likelihood) over consecutive windows of the text."""
    total, count = 0.0, 0
    for start in range(0, len(tokens) - 1, window):
        chunk = tokens[start:start + window + 1]
        if len(chunk) < 2:
            break
        inputs, targets = chunk[:-1], np.array(chunk[1:])
        places = np.arange(len(inputs), dtype=np.int32)[None]
        logits = graph.forward(np.array([inputs], np.int32), places, places, places,
                               all_logits=True)[0].astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        total -= log_probs[np.arange(len(targets)), targets].sum()
        count += len(targets)
    return math.exp(total / count), count


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
        tokens = tokenizer.encode(f.read())[:args.max_tokens]
    window = min(args.window, checkpoint.hparams.n_ctx)
    results = {}
    for dtype in ("float32", "bfloat16"):
        graph = DecoderGraph(checkpoint.hparams, pool_size=window, threads=2, cache_dtype=dtype)
        graph.load_weights(WeightReader(checkpoint))
        results[dtype], count = perplexity(graph, tokens, window)
        graph.close()
    change = results["bfloat16"] / results["float32"] - 1
    print(f"{checkpoint.path}, {count} tokens of {args.text}, windows of {window}")
    print(f"perplexity, float32 cache:  {results['float32']:.4f}")
    print(f"perplexity, bfloat16 cache: {results['bfloat16']:.4f}  ({change:+.3%})")


if __name__ == "__main__":
    main()
