"""benchmarks/grow_model.py: a bigger checkpoint that computes what the small one does."""
import os
import subprocess
import sys

import numpy as np

from app.engine.checkpoint import open_checkpoint
from benchmarks import grow_model
from engine_models import perturbed_copy, reference_logits
from pokegen.service_stack import ROOT

# Twice the tiny preset's width and heads, more layers, a longer vocabulary:
# small enough for a test, every rule of the full-size growth exercised.
TARGET = {"n_layer": 6, "n_embd": 512, "n_head": 8, "n_ctx": 1024, "n_vocab": 4200}


def test_the_grown_model_gives_the_small_models_logits(tmp_path):
    checkpoint_dir, small, tokenizer = perturbed_copy(str(tmp_path / "small"))
    table = os.path.join(small.run_dir, "drafts.npz")
    np.savez(table, keys=np.arange(4))  # the run's draft table, by token ids: the same tokenizer
    grown_dir = tmp_path / "grown" / "run1"
    grow_model.grow(small.run_dir, str(grown_dir), TARGET)
    grown = open_checkpoint(str(tmp_path / "grown"), "run1")
    assert grown.hparams.as_dict() == TARGET
    assert (grown_dir / "drafts.npz").read_bytes() == open(table, "rb").read()

    tokens = tokenizer.encode("Ash and Pikachu reach Viridian City, where Nurse Joy waits.")
    expected = reference_logits(small, tokens)
    logits = reference_logits(grown, tokens)
    vocab = small.hparams.n_vocab
    np.testing.assert_allclose(logits[:, :vocab], expected, rtol=0, atol=2e-4 * np.abs(expected).max())
    assert np.all(logits[:, vocab:] == 0)  # tokens the tokenizer lacks: never the likeliest here
    assert (logits[:, :vocab].argmax(-1) == expected.argmax(-1)).all()


def test_a_missing_source_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "grow_model.py"),
                           "--source", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: cannot grow")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
