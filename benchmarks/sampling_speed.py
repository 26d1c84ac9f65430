"""CPU time of one sampling call for top_p without top_k, on rows of GPT-2's
vocabulary (50257 logits): sorting only the head that holds the mass (the
engine) against sorting the whole row (what it did before), on the same rows,
with the tokens chosen checked equal.

    python benchmarks/sampling_speed.py
    python benchmarks/sampling_speed.py --rows 400 --top-p 0.95

Rows are random normal logits times a scale: a large scale gives a peaked
distribution (a small nucleus), a small one a flat one (a nucleus of most of
the vocabulary, the worst case).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np

from app.engine import sampling
from app.engine.sampling import TokenSampler
from benchmarks.service_speed import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VOCAB = 50257


def timed(rows: np.ndarray, temperature: float, top_p: float, head: int) -> tuple[float, list]:
    """CPU seconds per call, and the tokens chosen, with the nucleus head starting at `head`."""
    first, sampling.FIRST_NUCLEUS_HEAD = sampling.FIRST_NUCLEUS_HEAD, head
    try:
        sampler = TokenSampler(temperature, 0, top_p, seed=1, vocab_size=VOCAB)
        started = time.process_time()
        tokens = [sampler(row) for row in rows]
        return (time.process_time() - started) / len(rows), tokens
    finally:
        sampling.FIRST_NUCLEUS_HEAD = first


def median_nucleus(rows: np.ndarray, args) -> int:
    """The median number of tokens top_p keeps in these rows."""
    sizes = []
    for row in rows.astype(np.float64):
        probs = np.exp((row - row.max()) / args.temperature)
        probs = np.sort(probs / probs.sum())[::-1]
        sizes.append(int(np.searchsorted(np.cumsum(probs), args.top_p)) + 1)
    return int(np.median(sizes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()
    print(f"{cpu_model()}; top_p {args.top_p}, top_k 0, temperature {args.temperature}, "
          f"{args.rows} rows of {VOCAB} logits; CPU ms per call")
    print("nucleus: median tokens kept; sort all: before; head only: now")
    print(f"{'logit scale':>11} {'nucleus':>8} {'sort all':>9} {'head only':>10} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for scale in (4.0, 2.0, 1.0, 0.5):
        rows = (rng.standard_normal((args.rows, VOCAB)) * scale).astype(np.float32)
        before, expected = timed(rows, args.temperature, args.top_p, head=VOCAB)
        after, tokens = timed(rows, args.temperature, args.top_p, head=sampling.FIRST_NUCLEUS_HEAD)
        if tokens != expected:
            print("the head-only nucleus chose other tokens than sorting everything",
                  file=sys.stderr)
            return 1
        print(f"{scale:>11} {median_nucleus(rows, args):>8} {before * 1e3:>9.2f} "
              f"{after * 1e3:>10.2f} "
              f"{before / after:>6.1f}")
    print("rerun: " + shlex.join([os.path.relpath(sys.executable, ROOT),
                                  os.path.relpath(os.path.abspath(sys.argv[0]), ROOT),
                                  *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
