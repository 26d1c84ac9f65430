"""pokegen.new_model builds folders that gpt-2-simple treats exactly like a downloaded GPT-2."""

import json
import math
import os
import subprocess
import sys

import gpt_2_simple as gpt2
from gpt_2_simple.src import encoder as gpt2_encoder
import pytest
import tensorflow as tf
from tokenizers import Tokenizer, models, pre_tokenizers

from pokegen import new_model
from pokegen.gpt2_format import END_OF_TEXT

CORPUS = (
    "Ash and Pikachu reach Viridian City, where Nurse Joy heals the injured Pokemon. "
    "Team Rocket tries to steal Pikachu, but Ash and Misty stop them at the Pokemon Center.\n"
    "Brock joins the group after his Gym battle with Ash, and they head to Mt. Moon.\n"
) * 40


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return str(path)


def test_tokenizer_files_are_read_by_gpt2_simple_and_split_text_like_tokenizers(tmp_path, corpus_file):
    size = new_model.train_tokenizer([corpus_file], str(tmp_path / "tok"), vocab_size=600)

    enc = gpt2_encoder.get_encoder(str(tmp_path / "tok"))
    assert size == len(enc.encoder) == 600
    assert enc.encoder[END_OF_TEXT] == 599  # last id, as in GPT-2
    assert len(enc.bpe_ranks) == 600 - 256 - 1
    assert sorted(enc.encoder.values()) == list(range(600))

    # The same files loaded by the `tokenizers` package give the very same ids.
    reference = Tokenizer(
        models.BPE.from_file(str(tmp_path / "tok" / "encoder.json"), str(tmp_path / "tok" / "vocab.bpe"))
    )
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    text = "Ash and Misty meet Brock in Pewter City.\n  Unseen: Zubat, 42 badges, café!"
    ids = enc.encode(text)
    assert ids == reference.encode(text).ids
    assert enc.decode(ids) == text
    # Learned merges make the corpus compress well below one token per byte.
    assert len(enc.encode(CORPUS)) < len(CORPUS.encode("utf-8")) / 3


def test_small_corpus_still_yields_exact_gpt2_vocabulary(tmp_path, corpus_file):
    size = new_model.train_tokenizer([corpus_file], str(tmp_path), vocab_size=50257)

    enc = gpt2_encoder.get_encoder(str(tmp_path))
    assert size == len(enc.encoder) == 50257
    assert len(enc.bpe_ranks) == 50000
    assert enc.encoder[END_OF_TEXT] == 50256
    # Every id decodes (a random model may sample any of them) and text round-trips.
    assert enc.decode(list(range(50256)))
    text = "Odd bytes \x01\x7f and accents: é ü, kanji 日本"
    assert enc.decode(enc.encode(text)) == text


def test_tokenizer_without_corpus_uses_builtin_text(tmp_path):
    assert new_model.train_tokenizer(None, str(tmp_path), vocab_size=400) == 400
    enc = gpt2_encoder.get_encoder(str(tmp_path))
    assert len(enc.encode("Ash and Pikachu")) < len("Ash and Pikachu")


def test_tiny_model_dir_loads_and_generates_with_plain_gpt2_simple(tmp_path):
    run_dir = tmp_path / "checkpoint" / "fresh"
    hparams = new_model.create_model_dir(str(run_dir), "tiny", seed=3)

    assert hparams == new_model.PRESETS["tiny"]
    assert hparams["n_ctx"] == 1024
    assert json.loads((run_dir / "hparams.json").read_text()) == hparams
    assert {"checkpoint", "encoder.json", "vocab.bpe", "hparams.json", "model.ckpt.index",
            "model.ckpt.meta", "model.ckpt.data-00000-of-00001"} <= set(os.listdir(run_dir))
    assert tf.train.latest_checkpoint(str(run_dir)) == str(run_dir / "model.ckpt")
    assert not [name for name in os.listdir(tmp_path / "checkpoint") if name.startswith(".")]

    with tf.Graph().as_default():
        sess = gpt2.start_tf_sess(threads=1)
        gpt2.load_gpt2(sess, checkpoint_dir=str(tmp_path / "checkpoint"), run_name="fresh")
        texts = gpt2.generate(sess, checkpoint_dir=str(tmp_path / "checkpoint"), run_name="fresh",
                              prefix="Pikachu and Ash were", length=8, return_as_list=True, seed=1)
        sess.close()
    assert len(texts) == 1 and texts[0].startswith("Pikachu and Ash were")
    assert len(texts[0]) > len("Pikachu and Ash were")


def test_gpt2_small_preset_has_gpt2_124m_variables(tmp_path):
    model_dir = tmp_path / "models" / "gpt2-small"
    hparams = new_model.create_model_dir(str(model_dir), "gpt2-small")

    assert hparams == {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_ctx": 1024, "n_vocab": 50257}
    variables = dict(tf.train.list_variables(str(model_dir / "model.ckpt")))
    assert variables["model/wte"] == [50257, 768]
    assert variables["model/wpe"] == [1024, 768]
    assert variables["model/h11/attn/c_attn/w"] == [1, 768, 2304]
    assert "model/h12/attn/c_attn/w" not in variables
    n_params = sum(math.prod(shape) for shape in variables.values())
    assert n_params == 124_439_808  # GPT-2 "124M", parameter for parameter


def test_same_seed_gives_same_weights_and_replaces_older_model(tmp_path):
    target = tmp_path / "m"
    new_model.create_model_dir(str(target), "tiny", seed=7)
    first = tf.train.load_variable(str(target / "model.ckpt"), "model/h0/mlp/c_fc/w")
    new_model.create_model_dir(str(target), "tiny", seed=7)
    again = tf.train.load_variable(str(target / "model.ckpt"), "model/h0/mlp/c_fc/w")
    new_model.create_model_dir(str(target), "tiny", seed=8)
    other = tf.train.load_variable(str(target / "model.ckpt"), "model/h0/mlp/c_fc/w")

    assert (first == again).all()
    assert not (first == other).all()
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no build or replaced folders left behind


def test_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        new_model.create_model_dir(str(keep), "tiny")
    assert (keep / "todo.txt").read_text() == "mine"


def test_unknown_preset_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="tiny"):
        new_model.create_model_dir(str(tmp_path / "x"), "huge")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("mark, content", [("counter", "5"), ("pokegen.json", "{}"),
                                           ("model-5.index", "")])
def test_refuses_to_replace_a_trained_run(tmp_path, mark, content):
    # What finetuning adds to a folder made here: gpt-2-simple's step counter and
    # step-numbered checkpoint, train.py's model card.
    run = tmp_path / "run1"
    new_model.create_model_dir(str(run), "tiny", seed=1)
    (run / mark).write_text(content)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(FileExistsError) as refused:
        new_model.create_model_dir(str(run), "tiny", seed=2)
    assert str(refused.value) == (f"{run} holds a trained run ({mark}); "
                                  "not replacing it with new random weights")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["run1"]


def test_the_command_builds_a_run_and_refuses_a_folder_that_is_not_a_model(tmp_path):
    run = tmp_path / "run1"
    built = subprocess.run([sys.executable, "-m", "pokegen.new_model", str(run), "--seed", "4"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip().splitlines()[-1].startswith(f"{run}: a new tiny model")
    assert json.loads((run / "hparams.json").read_text()) == new_model.PRESETS["tiny"]

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    refused = subprocess.run([sys.executable, "-m", "pokegen.new_model", str(tmp_path / "notes")],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'notes'} exists and is not a model folder; not replacing it")
