"""Draft tokens from the training text: the likeliest continuation, a small table
beside the checkpoint, written by train.py and read by the engine."""
import os
import subprocess
import sys

import numpy as np

from app.engine.corpus_drafts import TABLE_NAME, CorpusDrafts, build_table, write_table
from app.engine.text import Tokenizer
from engine_models import copy_tiny_run
from pokegen.service_stack import ROOT


def test_the_likeliest_next_token_is_proposed_three_then_two_tokens_back():
    drafts = CorpusDrafts(build_table(np.array([1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 3, 4, 6, 7]), 10))
    assert drafts.propose([9, 1, 2, 3], 2) == [4, 6]   # 1 2 3 -> 4 (twice, 5 once), 2 3 4 -> 6
    assert drafts.propose([9, 3, 4], 3) == [6, 7]  # 9 3 4 unknown: 3 4 -> 6 (a tie, the later id)
    assert drafts.propose([8, 8], 3) == []          # no context of the text ends like this


def test_a_run_gets_its_table_from_its_training_text(tmp_path):
    run_dir = copy_tiny_run(str(tmp_path))
    text = tmp_path / "train.txt"
    text.write_text("Ash and Pikachu arrive in Pallet Town. " * 50, encoding="utf-8")
    path = write_table(run_dir, str(text))
    assert path == os.path.join(run_dir, TABLE_NAME) and oct(os.stat(path).st_mode & 0o777) == "0o644"
    tokenizer = Tokenizer(run_dir, 4096)
    tokens = tokenizer.encode("Ash and Pikachu arrive in Pallet Town.")
    drafts = CorpusDrafts.load(run_dir)
    assert drafts.propose(tokens[:3], len(tokens) - 3) == tokens[3:]


def test_an_unreadable_table_is_ignored_and_a_missing_text_is_a_one_line_error(tmp_path):
    run_dir = copy_tiny_run(str(tmp_path))
    (tmp_path / "run1" / TABLE_NAME).write_bytes(b"not a table")
    assert CorpusDrafts.load(run_dir) is None
    done = subprocess.run([sys.executable, "-m", "app.engine.corpus_drafts", run_dir,
                           str(tmp_path / "missing.txt")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("error: cannot write the draft table")
    assert len(done.stderr.strip().splitlines()) == 1
