"""train.py end to end on the tiny preset: layout, loading, resume, model card, errors."""

import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import gpt_2_simple as gpt2
import pytest
import tensorflow as tf

import train
from pokegen import model_card, new_model
from pokegen.service_stack import free_port
from signals import interruptible

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEROES = ["Ash", "Misty", "Brock", "May", "Dawn", "Serena", "Team Rocket", "Professor Oak"]
POKEMON = ["Pikachu", "Togepi", "Psyduck", "Onix", "Bulbasaur", "Piplup", "Meowth", "Snorlax"]
PLACES = ["Pallet Town", "Cerulean City", "the Safari Zone", "Mt. Moon", "a dark forest"]
SENTENCES = ["{h} and {p} arrive in {c}.", "{h} battles a wild {p} near {c}.",
             "Meanwhile, {h} tries to catch {p}.", "{p} uses a new move and wins the battle.",
             "The group leaves {c} with {p} at dawn."]


def episode_text(n_sentences, seed):
    rng = random.Random(seed)
    sentences = [rng.choice(SENTENCES).format(h=rng.choice(HEROES), p=rng.choice(POKEMON), c=rng.choice(PLACES))
                 for _ in range(n_sentences)]
    return "\n\n".join(" ".join(sentences[i:i + 6]) for i in range(0, n_sentences, 6)) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.txt").write_text(episode_text(500, seed=1), encoding="utf-8")
    (folder / "val.txt").write_text(episode_text(60, seed=2), encoding="utf-8")
    return folder


def tiny_args(corpus, workdir, *extra):
    return ["--from-scratch", "tiny", "--dataset", str(corpus / "train.txt"),
            "--val-dataset", str(corpus / "val.txt"), "--checkpoint-dir", str(workdir / "checkpoint"),
            "--model-dir", str(workdir / "models"), "--val-every", "2", "--sample-every", "1000",
            "--save-every", "1000", *extra]


@pytest.fixture(scope="module")
def training_session(corpus, tmp_path_factory):
    """A tiny run trained for 4 steps, in-process, as `python train.py` would: its folder,
    what it printed, and the steps it asked a learning rate for."""
    workdir = tmp_path_factory.mktemp("work")
    printed, rate_steps = io.StringIO(), []
    real_learning_rate_at = train.learning_rate_at

    def learning_rate_at(step, settings):
        rate_steps.append(step)
        return real_learning_rate_at(step, settings)

    cwd = os.getcwd()
    os.chdir(workdir)  # samples are written to a samples/ folder in the working directory
    try:
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
            patch.setattr(train, "learning_rate_at", learning_rate_at)
            exit_code = train.main(tiny_args(corpus, workdir, "--steps", "4", "--seed", "5",
                                             "--sample-every", "2", "--sample-length", "16"))
    finally:
        os.chdir(cwd)
    assert exit_code == 0
    return types.SimpleNamespace(workdir=workdir, printed=printed.getvalue(), rate_steps=rate_steps)


@pytest.fixture(scope="module")
def trained_run(training_session):
    return training_session.workdir


def test_training_leaves_a_draft_table_of_its_text(trained_run):
    from app.engine.corpus_drafts import TABLE_NAME, CorpusDrafts
    run_dir = trained_run / "checkpoint" / "run1"
    assert (run_dir / TABLE_NAME).is_file()
    assert CorpusDrafts.load(str(run_dir)).tables[0][1].size > 100  # its 3-token contexts


def test_run_folder_has_gpt2_layout_and_tokenizer(trained_run):
    run_dir = trained_run / "checkpoint" / "run1"
    names = set(os.listdir(run_dir))
    assert {"checkpoint", "counter", "encoder.json", "vocab.bpe", "hparams.json", "pokegen.json",
            "model-4.index", "model-4.meta", "model-4.data-00000-of-00001"} <= names
    assert (run_dir / "counter").read_text().strip() == "4"
    assert tf.train.latest_checkpoint(str(run_dir)).endswith("model-4")
    # Relative to the folder, so the run still loads after it is moved or copied.
    assert 'model_checkpoint_path: "model-4"\n' in (run_dir / "checkpoint").read_text()

    hparams = json.loads((run_dir / "hparams.json").read_text())
    assert hparams == new_model.PRESETS["tiny"] and hparams["n_ctx"] == 1024
    encoder = json.loads((run_dir / "encoder.json").read_text(encoding="utf-8"))
    assert len(encoder) == hparams["n_vocab"] and encoder["<|endoftext|>"] == hparams["n_vocab"] - 1
    assert (run_dir / "vocab.bpe").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    # The tokenizer learned the corpus: its words are single tokens.
    assert "ĠPikachu" in encoder and "ĠCerulean" in encoder


def test_run_loads_and_generates_with_plain_gpt2_simple(trained_run):
    checkpoint_dir = str(trained_run / "checkpoint")
    with tf.Graph().as_default():
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, checkpoint_dir=checkpoint_dir, run_name="run1")
        texts = gpt2.generate(sess, checkpoint_dir=checkpoint_dir, run_name="run1",
                              prefix="Pikachu and Ash were", length=12, return_as_list=True, seed=2)
        sess.close()
    assert len(texts) == 1
    assert texts[0].startswith("Pikachu and Ash were") and len(texts[0]) > len("Pikachu and Ash were")


def test_model_card_describes_the_run(trained_run, corpus):
    card = model_card.read_model_card(str(trained_run / "checkpoint" / "run1"))
    train_file = corpus / "train.txt"

    assert card["base"] == {"kind": "scratch", "preset": "tiny"}
    assert card["hparams"] == new_model.PRESETS["tiny"]
    assert card["training"]["steps"] == 4 and card["training"]["seed"] == 5
    assert card["training"]["learning_rate"] == train.SCRATCH_DEFAULTS["tiny"]["learning_rate"]
    assert card["training"]["lr_schedule"] == "cosine"
    assert card["corpus"]["train"]["bytes"] == train_file.stat().st_size
    assert card["corpus"]["train"]["sha256"] == model_card.file_fingerprint(str(train_file))["sha256"]
    assert card["corpus"]["train"]["tokens"] > 1024
    assert card["corpus"]["val"]["bytes"] == (corpus / "val.txt").stat().st_size
    assert card["steps"] == 4 and card["interrupted"] is False
    # A fresh model starts near ln(vocab) and four steps at 1e-3 already bring it down.
    assert card["val_loss_start"] == pytest.approx(8.3, abs=0.5)
    assert card["train_loss"] < card["val_loss_start"] and card["val_loss"] < card["val_loss_start"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", card["date"])
    assert [(h["from_step"], h["to_step"]) for h in card["history"]] == [(0, 4)]


def test_fresh_run_never_overwrites_an_existing_one(trained_run, corpus, capsys):
    run_dir = trained_run / "checkpoint" / "run1"
    before = (run_dir / "pokegen.json").read_text()

    assert train.main(tiny_args(corpus, trained_run, "--steps", "2")) == 1

    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("train.py: error:") and "--resume" in error[-1]
    assert (run_dir / "counter").read_text().strip() == "4"
    assert (run_dir / "pokegen.json").read_text() == before


def test_ctrl_c_saves_and_resume_continues_the_step_count(corpus, tmp_path):
    command = [sys.executable, os.path.join(REPO, "train.py"),
               *tiny_args(corpus, tmp_path, "--steps", "1000")]
    printed = open(tmp_path / "printed.txt", "w")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=printed, stderr=subprocess.PIPE,
                               text=True, errors="replace", preexec_fn=interruptible)
    progress = []
    reader = threading.Thread(target=lambda: progress.extend(iter(lambda: process.stderr.read(64), "")))
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not re.search(r" [3-9]/1000", "".join(progress)) and time.monotonic() < deadline:
            assert process.poll() is None, "".join(progress)
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    finally:
        process.kill()
        reader.join()
        printed.close()

    run_dir = tmp_path / "checkpoint" / "run1"
    stopped_at = int((run_dir / "counter").read_text())
    assert 3 <= stopped_at < 1000
    assert tf.train.latest_checkpoint(str(run_dir)).endswith(f"model-{stopped_at}")
    assert model_card.read_model_card(str(run_dir))["interrupted"] is True
    assert "--resume" in "".join(progress).splitlines()[-1]
    assert f"interrupted at step {stopped_at}: saving a checkpoint" in (tmp_path / "printed.txt").read_text()

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert train.main(tiny_args(corpus, tmp_path, "--resume", "--steps", str(stopped_at + 2))) == 0
    finally:
        os.chdir(cwd)

    assert int((run_dir / "counter").read_text()) == stopped_at + 2
    assert tf.train.latest_checkpoint(str(run_dir)).endswith(f"model-{stopped_at + 2}")
    card = model_card.read_model_card(str(run_dir))
    assert card["steps"] == stopped_at + 2 and card["interrupted"] is False
    assert [(h["from_step"], h["to_step"]) for h in card["history"]] == [
        (0, stopped_at), (stopped_at, stopped_at + 2)]
    assert card["base"] == {"kind": "scratch", "preset": "tiny"}


def run_until_step(command, cwd, step, **popen):
    """Starts a training and returns it with its stderr so far once it is past `step`."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, errors="replace", **popen)
    progress = []
    reader = threading.Thread(target=lambda: progress.extend(iter(lambda: process.stderr.read(64), "")))
    reader.start()
    deadline = time.monotonic() + 180
    while not re.search(rf" ([{step}-9]|\d\d+)/1000", "".join(progress)) and time.monotonic() < deadline:
        assert process.poll() is None, "".join(progress)
        time.sleep(0.2)
    return process, reader, progress


def test_sigterm_saves_and_exits_like_ctrl_c(corpus, tmp_path):
    # What `docker stop` and systemd send; save_every is far away, so only the
    # signal's own save can keep the steps done.
    command = [sys.executable, os.path.join(REPO, "train.py"),
               *tiny_args(corpus, tmp_path, "--steps", "1000")]
    process, reader, progress = run_until_step(command, tmp_path, 3)
    try:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 130, "".join(progress)
    finally:
        process.kill()
        reader.join()
    run_dir = tmp_path / "checkpoint" / "run1"
    stopped_at = int((run_dir / "counter").read_text())
    assert 3 <= stopped_at < 1000
    assert tf.train.latest_checkpoint(str(run_dir)).endswith(f"model-{stopped_at}")
    assert model_card.read_model_card(str(run_dir))["interrupted"] is True
    assert "Traceback" not in "".join(progress)


@pytest.mark.parametrize("counter", ["", "1", "garbage\n"])
def test_resume_recovers_the_step_from_the_checkpoint_when_the_counter_is_broken(
        trained_run, corpus, tmp_path, counter):
    # gpt-2-simple truncates `counter`, then writes it: a crash between leaves it
    # empty (or, cut in the write, holding part of the number).
    shutil.copytree(trained_run / "checkpoint", tmp_path / "checkpoint")
    run_dir = tmp_path / "checkpoint" / "run1"
    (run_dir / "counter").write_text(counter)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert train.main(tiny_args(corpus, tmp_path, "--resume", "--steps", "6")) == 0
    finally:
        os.chdir(cwd)
    assert (run_dir / "counter").read_text() == "6\n"
    assert tf.train.latest_checkpoint(str(run_dir)).endswith("model-6")
    history = model_card.read_model_card(str(run_dir))["history"]
    assert [(h["from_step"], h["to_step"]) for h in history] == [(0, 4), (4, 6)]


def test_resuming_a_damaged_checkpoint_is_one_line(trained_run, corpus, tmp_path, capsys):
    shutil.copytree(trained_run / "checkpoint", tmp_path / "checkpoint")
    weights = tmp_path / "checkpoint" / "run1" / "model-4.data-00000-of-00001"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short, as by a copy that failed
    assert train.main(tiny_args(corpus, tmp_path, "--resume", "--steps", "6")) == 1
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert re.fullmatch(r"train.py: error: cannot load .*model-4: .+", error.strip().splitlines()[-1])


def limit_file_size(limit_bytes):
    def apply():
        # A full disk as the kernel reports it to one process: writes past the
        # limit fail with EFBIG (Python ignores the SIGXFSZ that comes with it).
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(
        trained_run, corpus, tmp_path):
    shutil.copytree(trained_run / "checkpoint", tmp_path / "checkpoint")
    run_dir = tmp_path / "checkpoint" / "run1"
    weights = (run_dir / "model-4.data-00000-of-00001").stat().st_size
    command = [sys.executable, os.path.join(REPO, "train.py"),
               *tiny_args(corpus, tmp_path, "--resume", "--steps", "6")]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, errors="replace",
                            timeout=600, preexec_fn=limit_file_size(weights // 4))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"train.py: error: training stopped at step 6: .*File too large.*; the "
                        r"checkpoints saved before in .* are kept \(continue with --resume\)", last), last
    # The step-4 checkpoint is whole and still the latest, so the run goes on.
    assert tf.train.latest_checkpoint(str(run_dir)).endswith("model-4")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert train.main(tiny_args(corpus, tmp_path, "--resume", "--steps", "6")) == 0
    finally:
        os.chdir(cwd)
    assert tf.train.latest_checkpoint(str(run_dir)).endswith("model-6")


def test_two_trainings_never_write_the_same_run(corpus, tmp_path, capsys):
    with train.exclusive_run(str(tmp_path / "checkpoint" / "run1")):
        assert train.main(tiny_args(corpus, tmp_path, "--steps", "2")) == 1
    assert "another training is writing" in capsys.readouterr().err
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoint" / "run1")) is None


def test_resume_needs_an_existing_run(corpus, tmp_path, capsys):
    assert train.main(tiny_args(corpus, tmp_path, "--resume")) == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_gpt2_without_weights_or_network_fails_with_one_clear_line(corpus, tmp_path, monkeypatch, capsys):
    # Every download goes to a closed port on this machine: it fails at once, offline or not.
    proxy = f"http://127.0.0.1:{free_port()}"
    for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]:
        monkeypatch.setenv(name, proxy)
    for name in ["NO_PROXY", "no_proxy"]:
        monkeypatch.delenv(name, raising=False)

    exit_code = train.main(["--model", "124M", "--dataset", str(corpus / "train.txt"),
                            "--model-dir", str(tmp_path / "models"),
                            "--checkpoint-dir", str(tmp_path / "checkpoint")])

    assert exit_code == 1
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1
    assert error_lines[0].startswith("train.py: error: GPT-2 124M is not in")
    assert "--from-scratch" in error_lines[0]
    assert os.listdir(tmp_path / "models") == []  # no half-downloaded model left to trip up the next run
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoint" / "run1")) is None


def test_gpt2_path_uses_weights_already_in_models_without_downloading(corpus, tmp_path, monkeypatch):
    # A stand-in for the downloaded 124M: the same seven files, a tiny shape.
    new_model.create_model_dir(str(tmp_path / "models" / "124M"), "tiny", corpus_files=[str(corpus / "train.txt")])
    for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]:
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")  # any download would fail
    monkeypatch.chdir(tmp_path)

    exit_code = train.main(["--model", "124M", "--dataset", str(corpus / "train.txt"), "--steps", "2",
                            "--accumulate-gradients", "1", "--model-dir", "models",
                            "--checkpoint-dir", "checkpoint"])

    assert exit_code == 0
    card = model_card.read_model_card(str(tmp_path / "checkpoint" / "run1"))
    assert card["base"] == {"kind": "gpt2", "model_name": "124M"}
    assert card["training"]["learning_rate"] == 1e-4 and card["training"]["lr_schedule"] == "constant"
    assert card["steps"] == 2
    assert (tmp_path / "checkpoint" / "run1" / "encoder.json").read_bytes() == (
        tmp_path / "models" / "124M" / "encoder.json").read_bytes()


def test_too_small_corpus_is_a_clear_error(tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text(episode_text(20, seed=3), encoding="utf-8")
    exit_code = train.main(["--from-scratch", "tiny", "--dataset", str(small),
                            "--checkpoint-dir", str(tmp_path / "checkpoint"),
                            "--model-dir", str(tmp_path / "models")])
    assert exit_code == 1
    assert "too small" in capsys.readouterr().err
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoint" / "run1")) is None


def test_a_trained_run_in_the_model_folder_is_never_replaced(corpus, tmp_path, capsys):
    # --from-scratch builds its new model in --model-dir/scratch-<preset>.
    held = tmp_path / "models" / "scratch-tiny"
    held.mkdir(parents=True)
    (held / "hparams.json").write_text(json.dumps(new_model.PRESETS["tiny"]))
    (held / "counter").write_text("7\n")
    exit_code = train.main(tiny_args(corpus, tmp_path, "--steps", "2"))
    assert exit_code == 1
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert error.strip().splitlines()[-1].startswith("train.py: error:") and "--model-dir" in error
    assert sorted(os.listdir(held)) == ["counter", "hparams.json"]


def test_missing_dataset_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["--from-scratch", "tiny", "--dataset", str(tmp_path / "absent.txt")])
    assert stop.value.code == 2
    assert "no such file" in capsys.readouterr().err


def test_training_reports_losses_and_samples_on_schedule(training_session):
    # --val-every 2 and --sample-every 2 over 4 steps: before step 1 and after step 2; the
    # last step's losses are measured at the end, and its checkpoint is the one saved.
    run_dir = training_session.workdir / "checkpoint" / "run1"
    card = model_card.read_model_card(str(run_dir))
    lines = training_session.printed.splitlines()
    assert f"step 0: val_loss {card['val_loss_start']:.3f}" in lines
    step_lines = [line for line in lines if re.match(r"step [1-9]", line)]
    assert len(step_lines) == 1, step_lines
    assert re.fullmatch(r"step 2: loss \d+\.\d\d avg \d+\.\d\d val_loss \d+\.\d{3}", step_lines[0])
    assert [line for line in lines if line.startswith("Saving ")] == [f"Saving {run_dir / 'model-4'}"]
    assert training_session.printed.count("======== SAMPLE 1 ========") == 1
    sample = (training_session.workdir / "samples" / "run1" / "samples-2").read_text()
    assert sample.startswith("======== SAMPLE 1 ========\n") and sample in training_session.printed
    # Every optimizer step takes its own rate from the schedule.
    assert training_session.rate_steps == [1, 2, 3, 4]
    assert any(name.startswith("events.out.tfevents.") for name in os.listdir(run_dir))  # TensorBoard


def test_evaluation_windows_are_fixed_and_cover_the_corpus():
    import numpy as np
    chunks = [np.arange(5000)]
    windows = train.evaluation_windows(chunks, count=4)
    assert [len(w) for w in windows] == [1024] * 4
    assert windows[0][0] == 0 and windows[-1][-1] == 4999
    assert [w[0] for w in windows] == [w[0] for w in train.evaluation_windows(chunks, count=4)]
    assert [len(w) for w in train.evaluation_windows([np.arange(300)])] == [300]
    assert train.evaluation_windows([]) == []


def test_cosine_schedule_warms_up_then_decays_to_a_tenth():
    settings = {"learning_rate": 1e-3, "lr_schedule": "cosine", "steps": 1000}
    rates = [train.learning_rate_at(step, settings) for step in range(1, 1001)]
    warmup = int(1000 * train.WARMUP_FRACTION)
    assert rates[0] == pytest.approx(1e-3 / warmup)
    assert max(rates) == pytest.approx(1e-3) and rates.index(max(rates)) == warmup - 1
    assert all(a >= b for a, b in zip(rates[warmup:], rates[warmup + 1:]))
    assert rates[-1] == pytest.approx(1e-4)
    # Past the planned steps (a longer resumed run) it stays at the floor.
    assert train.learning_rate_at(1500, settings) == pytest.approx(1e-4)
    assert train.learning_rate_at(7, dict(settings, lr_schedule="constant")) == 1e-3
