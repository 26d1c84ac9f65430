"""Draft tokens from the training corpus: the continuation it most often gives.

A model fine-tuned on a corpus writes much like it, so the corpus's most
frequent next token after the last three tokens (or two, when those three
never occurred) is often the token the model samples. The table is small
(two sorted arrays per order) and is written next to the checkpoint, built
from the text the model was trained on:

    python -m app.engine.corpus_drafts checkpoint/run1 data/train.txt
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

import numpy as np

log = logging.getLogger("pokegen.engine")

TABLE_NAME = "drafts.npz"
ORDERS = (3, 2)  # context lengths, longest first


def _key(columns, vocab: int):
    """One number for a context of token ids: of ints an int, of int64 columns (one per
    position) an array of them (vocab ** order must fit in 63 bits)."""
    key = 0
    for column in columns:
        key = key * vocab + column
    return key


def build_table(tokens: np.ndarray, vocab: int) -> dict[str, np.ndarray]:
    """For each context of ORDERS tokens in `tokens`, its most frequent next token."""
    tokens = np.asarray(tokens, np.int64)
    table = {"vocab": np.array([vocab])}
    for order in ORDERS:
        if len(tokens) <= order:
            table[f"keys{order}"], table[f"next{order}"] = np.zeros(0, np.int64), np.zeros(0, np.int32)
            continue
        windows = np.lib.stride_tricks.sliding_window_view(tokens, order + 1)
        contexts, nexts = _key(windows[:, :order].T, vocab), windows[:, order]
        pairs, counts = np.unique(np.stack([contexts, nexts], 1), axis=0, return_counts=True)
        # Sorted by context, then by count: the last row of each context is its likeliest next.
        pairs = pairs[np.lexsort((counts, pairs[:, 0]))]
        last = np.r_[pairs[1:, 0] != pairs[:-1, 0], True]
        table[f"keys{order}"], table[f"next{order}"] = pairs[last, 0], pairs[last, 1].astype(np.int32)
    return table


class CorpusDrafts:
    def __init__(self, table: dict[str, np.ndarray]):
        self.vocab = int(table["vocab"][0])
        self.tables = [(order, table[f"keys{order}"], table[f"next{order}"]) for order in ORDERS]

    @classmethod
    def load(cls, run_dir: str) -> "CorpusDrafts | None":
        """The run's table; None when it has none or it cannot be read (drafts are
        only a speed-up: the model serves without them)."""
        path = os.path.join(run_dir, TABLE_NAME)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path) as table:
                return cls(dict(table))
        except (OSError, ValueError, KeyError, IndexError) as e:
            log.warning("ignoring the draft table %s: %s", path, e)
            return None

    def propose(self, context: list[int], count: int) -> list[int]:
        """Up to `count` tokens, each the corpus's likeliest after the ones before."""
        context, drafts = list(context[-max(ORDERS):]), []
        while len(drafts) < count:
            token = self._next(context)
            if token is None:
                break
            drafts.append(token)
            context = context[1:] + [token]
        return drafts

    def _next(self, context: list[int]) -> int | None:
        for order, keys, nexts in self.tables:
            if len(context) < order:
                continue
            key = _key(context[-order:], self.vocab)
            at = int(np.searchsorted(keys, key))
            if at < len(keys) and keys[at] == key:
                return int(nexts[at])
        return None


def write_table(run_dir: str, text_path: str) -> str:
    """Builds the table of `text_path` with the run's tokenizer; written aside, then renamed."""
    with open(text_path, encoding="utf-8") as f:  # first: reading a checkpoint loads TensorFlow
        text = f.read()
    from .checkpoint import open_checkpoint
    from .text import Tokenizer

    checkpoint = open_checkpoint(os.path.dirname(os.path.abspath(run_dir)), os.path.basename(run_dir))
    tokenizer = Tokenizer(checkpoint.run_dir, checkpoint.hparams.n_vocab)
    tokens = tokenizer.encode(text)
    table = build_table(np.array(tokens), checkpoint.hparams.n_vocab)
    fd, temporary = tempfile.mkstemp(dir=checkpoint.run_dir, suffix=".npz")
    os.close(fd)
    try:
        np.savez(temporary, **table)
        os.chmod(temporary, 0o644)  # mkstemp made it private; the service may run as another user
        path = os.path.join(checkpoint.run_dir, TABLE_NAME)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a run's draft table (drafts.npz) from "
                                                 "the text it was trained on.")
    parser.add_argument("run_dir", help="the run folder, e.g. checkpoint/run1")
    parser.add_argument("text", help="the training text, e.g. data/train.txt")
    args = parser.parse_args(argv)
    try:
        path = write_table(args.run_dir, args.text)
    except Exception as e:  # a missing run or text, an unreadable tokenizer
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        print(f"error: cannot write the draft table: {reason}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
