"""A missing or broken checkpoint: the engine says so in one line and refuses
work; start() itself never raises."""
import os
import shutil

import pytest

from app.engine import Engine, GenerationRequest
from app.engine.types import ModelUnavailable


@pytest.fixture(scope="module")
def good_run(tiny_checkpoint):
    return os.path.join(tiny_checkpoint, "run1")


def failed_engine(checkpoint_dir):
    engine = Engine(checkpoint_dir, "run1")
    engine.start()
    assert not engine.wait_ready(60)
    assert engine.state == "failed"
    assert engine.error and "\n" not in engine.error and "Traceback" not in engine.error
    with pytest.raises(ModelUnavailable, match="^the model failed to load: "):
        engine.submit(GenerationRequest())
    engine.close()
    return engine.error


def broken_copy(good_run, tmp_path, damage):
    run_dir = tmp_path / "run1"
    shutil.copytree(good_run, run_dir)
    damage(run_dir)
    return str(tmp_path)


def test_missing_folder(tmp_path):
    assert "does not exist" in failed_engine(str(tmp_path / "nowhere"))


def test_no_saved_step(good_run, tmp_path):
    error = failed_engine(broken_copy(good_run, tmp_path, lambda d: os.remove(d / "checkpoint")))
    assert "no saved model step" in error


def test_truncated_weights(good_run, tmp_path):
    def truncate(run_dir):
        data = next(p for p in run_dir.iterdir() if ".data-" in p.name)
        data.write_bytes(data.read_bytes()[:1000])
    assert "run1" in failed_engine(broken_copy(good_run, tmp_path, truncate))


def test_garbled_hparams(good_run, tmp_path):
    error = failed_engine(broken_copy(good_run, tmp_path,
                                      lambda d: (d / "hparams.json").write_text("{not json")))
    assert "hparams.json" in error


def test_hparams_that_do_not_match_the_weights(good_run, tmp_path):
    def widen(run_dir):
        text = (run_dir / "hparams.json").read_text().replace('"n_embd": 256', '"n_embd": 512')
        (run_dir / "hparams.json").write_text(text)
    assert "shape" in failed_engine(broken_copy(good_run, tmp_path, widen))


def test_missing_tokenizer(good_run, tmp_path):
    error = failed_engine(broken_copy(good_run, tmp_path, lambda d: os.remove(d / "vocab.bpe")))
    assert "vocab.bpe" in error
