"""Train the episode generator: fine-tune GPT-2, or train a new model offline.

    python train.py                        # GPT-2 124M (downloaded once), 1500 steps -> checkpoint/run1
    python train.py --from-scratch tiny    # no download: a new small model in GPT-2's format
    python train.py --resume               # continue checkpoint/run1 from its last saved step

The loop below does what gpt-2-simple's finetune does, with its pieces (the GPT-2
model, the window sampler, the text sampler, gradient accumulation) and Adam. The run
folder is what finetune writes (model-<step> checkpoints, `counter`, hparams.json,
encoder.json, vocab.bpe), so it loads with plain `gpt2.load_gpt2(sess, run_name=...)`.
Next to the checkpoint goes a model card (`pokegen.json`, see pokegen/model_card.py). Ctrl-C
saves a checkpoint; `--resume` goes on from it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

import argparse
import contextlib
import datetime
import fcntl
import json
import math
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time

import gpt_2_simple as gpt2
from gpt_2_simple.src import encoder as gpt2_encoder
from gpt_2_simple.src import model as gpt2_model
from gpt_2_simple.src import sample as gpt2_sample
from gpt_2_simple.src.accumulate import AccumulatingOptimizer
from gpt_2_simple.src.load_dataset import Sampler, load_dataset
import numpy as np
import requests
import tensorflow as tf
from tqdm import tqdm

from app.engine import corpus_drafts
from pokegen import model_card, new_model
from pokegen.atomic_files import atomic_write_text

GPT2_FILES = ["checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
              "model.ckpt.index", "model.ckpt.meta", "vocab.bpe"]
COPIED_INTO_RUN = ["hparams.json", "encoder.json", "vocab.bpe"]  # from the base model, as finetune does
WINDOW = 1024  # training windows, as gpt-2-simple's finetune samples them
EVAL_WINDOWS = 8  # fixed windows per loss evaluation: comparable from step to step
DOWNLOAD_TIMEOUT_SECONDS = 60

# The article's fine-tuning: gpt-2-simple's defaults, 1500 steps at a constant learning rate.
GPT2_DEFAULTS = {"steps": 1500, "learning_rate": 1e-4, "lr_schedule": "constant", "batch_size": 1,
                 "accumulate_gradients": 5, "sample_every": 100, "sample_length": 256,
                 "save_every": 500, "val_every": 100}
# A new model learns from nothing: a larger learning rate, many cheap one-window steps, and a
# cosine decay so that the last steps settle instead of bouncing on single-window noise.
SCRATCH_DEFAULTS = {
    "tiny": {"steps": 800, "learning_rate": 1e-3, "lr_schedule": "cosine", "batch_size": 1,
             "accumulate_gradients": 1, "sample_every": 200, "sample_length": 128,
             "save_every": 200, "val_every": 100},
    "small": {"steps": 1500, "learning_rate": 5e-4, "lr_schedule": "cosine", "batch_size": 1,
              "accumulate_gradients": 2, "sample_every": 250, "sample_length": 128,
              "save_every": 250, "val_every": 100},
    "gpt2-small": dict(GPT2_DEFAULTS, learning_rate=3e-4, lr_schedule="cosine"),
}
HYPERPARAMETERS = list(GPT2_DEFAULTS) + ["seed"]
LR_SCHEDULES = ["constant", "cosine"]
WARMUP_FRACTION = 0.05  # of the run's steps, for the cosine schedule
FINAL_LR_FRACTION = 0.1  # cosine decays to this share of --learning-rate


class TrainingError(Exception):
    """A problem the user can fix; reported as one line."""


# --- the run folder -------------------------------------------------------------------------

def completed_steps(run_dir):
    """Steps already trained in run_dir (0 when it holds no checkpoint).

    The step in the latest checkpoint's name comes first: `counter` is written
    after the checkpoint (and gpt-2-simple's own finetune truncates it first), so
    a crash in between leaves it empty or stale."""
    checkpoint = tf.train.latest_checkpoint(run_dir)
    if checkpoint is None:
        return 0
    match = re.search(r"-(\d+)$", checkpoint)
    if match:
        return int(match.group(1))
    try:
        with open(os.path.join(run_dir, "counter")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def exclusive_run(run_dir):
    """Hold the run folder for this process: two trainings never write one run at once."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, ".train.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(f"another training is writing {run_dir}; wait for it to finish") from None
        yield


def check_run_dir(run_dir, resume):
    """Steps done so far; refuses to overwrite a run, or to resume one that isn't there."""
    has_checkpoint = tf.train.latest_checkpoint(run_dir) is not None
    if resume and not has_checkpoint:
        raise TrainingError(f"nothing to resume: {run_dir} holds no checkpoint")
    if not resume and has_checkpoint:
        raise TrainingError(
            f"{run_dir} already holds a trained run (step {completed_steps(run_dir)}); "
            "continue it with --resume, or pick another --run-name")
    if not resume:
        # A step counter without a checkpoint is left from a run that never saved.
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(run_dir, "counter"))
    return completed_steps(run_dir)


# --- the model to start from ----------------------------------------------------------------

def gpt2_is_downloaded(model_dir, model_name):
    return all(os.path.isfile(os.path.join(model_dir, model_name, name)) for name in GPT2_FILES)


def ensure_gpt2_weights(model_dir, model_name):
    """Download GPT-2 into model_dir/model_name once; a failed download leaves nothing behind."""
    if gpt2_is_downloaded(model_dir, model_name):
        return
    os.makedirs(model_dir, exist_ok=True)
    staging = tempfile.mkdtemp(dir=model_dir, prefix=f".{model_name}.download-")
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)  # a dead network fails instead of hanging
    try:
        print(f"Downloading GPT-2 {model_name} into {os.path.join(model_dir, model_name)}")
        gpt2.download_gpt2(model_dir=staging, model_name=model_name)
        with open(os.path.join(staging, model_name, "hparams.json")) as f:
            json.load(f)  # an error page saved in its place fails here
        target = os.path.join(model_dir, model_name)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier copy
        os.rename(os.path.join(staging, model_name), target)
    except (requests.RequestException, OSError, KeyError, ValueError) as error:
        target = os.path.join(model_dir, model_name)
        raise TrainingError(
            f"GPT-2 {model_name} is not in {target} and cannot be downloaded ({type(error).__name__}); "
            "download it once with internet access, or train offline with --from-scratch tiny") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
        shutil.rmtree(staging, ignore_errors=True)


def prepare_base_model(args, seed):
    """(folder, base) of the model a new run starts from: a new model, or GPT-2."""
    if args.from_scratch:
        path = os.path.join(args.model_dir, f"scratch-{args.from_scratch}")
        print(f"Building a new {args.from_scratch} model in {path} (tokenizer trained on {args.dataset})")
        try:
            new_model.create_model_dir(path, args.from_scratch, corpus_files=[args.dataset], seed=seed)
        except FileExistsError as error:
            raise TrainingError(f"{error}; pick another --model-dir") from None
        return path, {"kind": "scratch", "preset": args.from_scratch}
    ensure_gpt2_weights(args.model_dir, args.model)
    return os.path.join(args.model_dir, args.model), {"kind": "gpt2", "model_name": args.model}


# --- corpus and loss evaluation ---------------------------------------------------------------

def encode_corpus(enc, path):
    """The corpus as token chunks, encoded the way gpt-2-simple's finetune does it."""
    return [np.asarray(chunk, dtype=np.int32) for chunk in load_dataset(enc, path, combine=50000)]


def evaluation_windows(chunks, count=EVAL_WINDOWS):
    """Up to `count` windows spread evenly over the corpus; the same ones every time."""
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    length = min(WINDOW, len(tokens))
    if length < 2:
        return []
    starts = np.linspace(0, len(tokens) - length, num=min(count, len(tokens) - length + 1)).astype(int)
    return [tokens[start:start + length] for start in sorted(set(starts))]


def learning_rate_at(step, settings):
    """The learning rate for optimizer step `step` (1-based) of the whole run."""
    peak = settings["learning_rate"]
    if settings["lr_schedule"] == "constant":
        return peak
    total = settings["steps"]
    warmup = max(1, int(total * WARMUP_FRACTION))
    if step <= warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


# --- training -------------------------------------------------------------------------------

def resolve_hyperparameters(args, previous_card):
    """Command-line values, else the resumed run's own, else the defaults of its base model."""
    resumed = (previous_card or {}).get("training", {}) if args.resume else {}
    base = (previous_card or {}).get("base", {}) if args.resume else {}
    preset = args.from_scratch or base.get("preset")
    defaults = SCRATCH_DEFAULTS.get(preset, SCRATCH_DEFAULTS["small"]) if preset else GPT2_DEFAULTS
    settings = {}
    for name in HYPERPARAMETERS:
        value = getattr(args, name)
        if value is None:
            value = resumed.get(name, defaults.get(name, 0 if name == "seed" else None))
        settings[name] = value
    return settings


def load_corpora(enc, args):
    """Encode the corpora once: (train chunks, val chunks, model card entry)."""
    print(f"Encoding {args.dataset}")
    train_chunks = encode_corpus(enc, args.dataset)
    train_tokens = sum(len(chunk) for chunk in train_chunks)
    if train_tokens // len(train_chunks) <= WINDOW:
        raise TrainingError(f"{args.dataset} is too small: {train_tokens} tokens, and training "
                            f"samples windows of {WINDOW}; give it more text")
    val_chunks = encode_corpus(enc, args.val_dataset) if args.val_dataset else []
    corpus = {"train": model_card.file_fingerprint(args.dataset, train_tokens),
              "val": model_card.file_fingerprint(args.val_dataset, sum(map(len, val_chunks)))
              if args.val_dataset else None}
    return train_chunks, val_chunks, corpus


def train(args):
    """Run one training session; returns (model card, interrupted)."""
    run_dir = os.path.join(args.checkpoint_dir, args.run_name)
    start_step = check_run_dir(run_dir, args.resume)
    previous_card = model_card.read_model_card(run_dir) if args.resume else None
    settings = resolve_hyperparameters(args, previous_card)
    last_step = settings["steps"]
    if last_step <= start_step:
        raise TrainingError(f"{run_dir} is already at step {start_step}; "
                            f"ask for more with --steps (more than {start_step})")

    # The weights to start from: the run's own, or a base model whose shape and tokenizer it takes.
    if args.resume:
        start_from, base = run_dir, (previous_card or {}).get("base") or {"kind": "unknown"}
    else:
        start_from, base = prepare_base_model(args, settings["seed"])
        for name in COPIED_INTO_RUN:
            shutil.copyfile(os.path.join(start_from, name), os.path.join(run_dir, name))
    with open(os.path.join(run_dir, "hparams.json")) as f:
        hparams = json.load(f)
    enc = gpt2_encoder.get_encoder(run_dir)
    train_chunks, val_chunks, corpus = load_corpora(enc, args)
    val_windows, train_windows = evaluation_windows(val_chunks), evaluation_windows(train_chunks)
    sampler = Sampler(train_chunks)  # draws with `random`: a resumed session draws new windows
    random.seed(settings["seed"] + start_step)

    # The graph: GPT-2, its next-token loss, gpt-2-simple's sampler on the same weights, Adam.
    tf.compat.v1.reset_default_graph()
    tf.compat.v1.set_random_seed(settings["seed"])
    shape = gpt2_model.default_hparams()
    shape.override_from_dict(hparams)
    context = tf.compat.v1.placeholder(tf.int32, [None, None])  # (batch, tokens)
    logits = gpt2_model.model(hparams=shape, X=context)["logits"]  # (batch, tokens, n_vocab)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=context[:, 1:], logits=logits[:, :-1]))  # mean over (batch, tokens - 1)
    sample_context = tf.compat.v1.placeholder(tf.int32, [1, None])  # (1, tokens)
    sample = gpt2_sample.sample_sequence(hparams=shape, length=settings["sample_length"],
                                         context=sample_context, batch_size=1, temperature=1.0, top_k=40)
    weights = [v for v in tf.compat.v1.trainable_variables() if "model" in v.name]
    learning_rate = tf.compat.v1.placeholder(tf.float32, [])
    optimizer = AccumulatingOptimizer(tf.compat.v1.train.AdamOptimizer(learning_rate), weights)
    zero_gradients, add_gradients = optimizer.reset(), optimizer.compute_gradients(loss)
    apply_gradients = optimizer.apply_gradients()  # returns the mean loss of the added batches
    # Only GPT-2's own names; relative paths in `checkpoint` let the run folder be moved.
    saver = tf.compat.v1.train.Saver(var_list=weights, max_to_keep=1, save_relative_paths=True)
    summaries = tf.compat.v1.summary.FileWriter(run_dir)  # the loss curve, for TensorBoard

    sess = gpt2.start_tf_sess()
    sess.run(tf.compat.v1.global_variables_initializer())
    checkpoint = tf.train.latest_checkpoint(start_from)
    print(f"Loading checkpoint {checkpoint}")
    try:
        saver.restore(sess, checkpoint)
    except (OSError, tf.errors.OpError) as error:
        raise TrainingError(f"cannot load {checkpoint}: {first_line(error)}") from None

    def mean_loss(windows):
        return float(np.mean([sess.run(loss, {context: [w]}) for w in windows])) if windows else None

    def save(step):
        tqdm.write(f"Saving {os.path.join(run_dir, f'model-{step}')}")
        saver.save(sess, os.path.join(run_dir, "model"), global_step=step)
        atomic_write_text(os.path.join(run_dir, "counter"), f"{step}\n")

    def print_sample(step):
        tokens = sess.run(sample, {sample_context: [sampler.sample(1)]})  # (1, 1 + sample_length)
        text = f"======== SAMPLE 1 ========\n{enc.decode(tokens[0])}\n"
        tqdm.write(text)
        os.makedirs(os.path.join("samples", args.run_name), exist_ok=True)
        with open(os.path.join("samples", args.run_name, f"samples-{step}"), "w") as f:
            f.write(text)

    val_loss_start = val_loss = mean_loss(val_windows)
    if val_loss is not None:
        print(f"step {start_step}: val_loss {val_loss:.3f}")
    bar = tqdm(total=last_step, initial=start_step, desc="training", unit="step",
               file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    step, smoothed, avg_loss, interrupted, started = start_step, (0.0, 0.0), None, False, time.time()
    try:
        try:
            while step < last_step:
                sess.run(zero_gradients)
                for _ in range(settings["accumulate_gradients"]):
                    batch = [sampler.sample(WINDOW) for _ in range(settings["batch_size"])]
                    sess.run(add_gradients, {context: batch})  # batch: (batch_size, WINDOW)
                rate = learning_rate_at(step + 1, settings)
                step_loss = float(sess.run(apply_gradients, {learning_rate: rate}))
                step += 1
                smoothed = (smoothed[0] * 0.99 + step_loss, smoothed[1] * 0.99 + 1)  # as gpt-2-simple's
                avg_loss = smoothed[0] / smoothed[1]
                summaries.add_summary(tf.compat.v1.Summary(value=[
                    tf.compat.v1.Summary.Value(tag="loss", simple_value=step_loss)]), step)
                if step < last_step and step % settings["val_every"] == 0:
                    val_loss = mean_loss(val_windows)
                    if val_loss is not None:
                        tqdm.write(f"step {step}: loss {step_loss:.2f} avg {avg_loss:.2f} "
                                   f"val_loss {val_loss:.3f}")
                bar.update()
                shown = {"loss": f"{step_loss:.2f}", "avg": f"{avg_loss:.2f}"}
                if val_loss is not None:
                    shown["val"] = f"{val_loss:.3f}"
                bar.set_postfix(shown)
                if step < last_step and step % settings["save_every"] == 0:
                    save(step)
                if step < last_step and step % settings["sample_every"] == 0:
                    print_sample(step)
        except KeyboardInterrupt:
            interrupted = True
            tqdm.write(f"interrupted at step {step}: saving a checkpoint")
        save(step)
    except (OSError, tf.errors.OpError) as error:
        # A full disk (or a file size limit) while saving: the last complete
        # checkpoint stays, as TensorFlow renames a checkpoint into place only when whole.
        raise TrainingError(f"training stopped at step {step}: {first_line(error)}; the checkpoints "
                            f"saved before in {run_dir} are kept (continue with --resume)") from None
    finally:
        bar.close()
        summaries.close()
    seconds = time.time() - started

    print("Measuring final losses")
    session = {
        "from_step": start_step, "to_step": step,
        "train_loss": mean_loss(train_windows),
        "last_avg_loss": avg_loss,
        "val_loss_start": val_loss_start,
        "val_loss_end": mean_loss(val_windows),
        "seconds": round(seconds, 1),
        "interrupted": interrupted,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    sess.close()
    card = model_card.updated_card(previous_card, run_name=args.run_name, base=base, hparams=hparams,
                                   training=settings, corpus=corpus, session=session)
    model_card.write_model_card(run_dir, card)
    return card, interrupted


def first_line(error):
    """An exception's reason on one line. TensorFlow's graph errors start with
    "Graph execution error:" and where the node was defined; the reason (such
    as "<file>; File too large") is their last line but the node's name."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("[[")]
    if lines[0].startswith("Graph execution error"):
        return lines[-1]
    return lines[0]


def stop_like_ctrl_c(signum, frame):
    """SIGTERM (`docker stop`, systemd, kill) does what Ctrl-C does: the training
    loop catches the KeyboardInterrupt, saves a checkpoint and returns. Further
    signals are ignored so that nothing cuts that save short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def describe(card):
    """One line summing up a finished training session."""
    parts = [f"step {card['steps']}", f"train_loss {card['train_loss']:.3f}"]
    if card.get("val_loss") is not None and card.get("val_loss_start") is not None:
        parts.append(f"val_loss {card['val_loss_start']:.3f} -> {card['val_loss']:.3f}")
    elif card.get("val_loss") is not None:
        parts.append(f"val_loss {card['val_loss']:.3f}")
    return ", ".join(parts)


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train the episode generator: fine-tune GPT-2 (downloaded "
                    "once into --model-dir), or build and train a new model offline with --from-scratch.",
        epilog="Defaults left unset come from the base model: GPT-2 uses the article's settings "
               "(1500 steps, learning rate 1e-4); each --from-scratch preset has its own; --resume "
               "reuses the run's. --steps counts the run's total, so a resumed run stops there too.")
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--model", default="124M", help="GPT-2 to fine-tune: 124M (default), 355M, ...")
    base.add_argument("--from-scratch", choices=list(new_model.PRESETS), metavar="PRESET",
                      help=f"train a new model instead of GPT-2: {', '.join(new_model.PRESETS)}")
    parser.add_argument("--dataset", default="data/train.txt", help="training text (default: %(default)s)")
    parser.add_argument("--val-dataset", help="validation text; its loss is printed every --val-every "
                        "steps (default: data/val.txt when it exists and --dataset is the "
                        "default; an empty value for none)")
    parser.add_argument("--steps", type=positive(int), help="train until the run reaches this step")
    parser.add_argument("--batch-size", type=positive(int), help="1024-token windows per gradient")
    parser.add_argument("--accumulate-gradients", type=positive(int),
                        help="batches averaged into each optimizer step")
    parser.add_argument("--learning-rate", type=positive(float), help="peak learning rate")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                        help="constant (GPT-2's default), or cosine: a short warm-up, then a decay to "
                             f"{FINAL_LR_FRACTION:g} of the peak at --steps (--from-scratch default)")
    parser.add_argument("--val-every", type=positive(int), help="steps between validation losses")
    parser.add_argument("--sample-every", type=positive(int), help="steps between printed samples")
    parser.add_argument("--sample-length", type=positive(int), help="tokens per printed sample")
    parser.add_argument("--save-every", type=positive(int), help="steps between checkpoints")
    parser.add_argument("--run-name", default="run1", help="folder under --checkpoint-dir (default: run1)")
    parser.add_argument("--checkpoint-dir", default="checkpoint", help="default: %(default)s")
    parser.add_argument("--model-dir", default="models", help="where base models live (default: models)")
    parser.add_argument("--seed", type=int, help="seed for initial weights and window sampling")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run from its latest checkpoint and step")
    args = parser.parse_args(argv)
    if args.val_dataset is None and args.dataset == "data/train.txt" and os.path.isfile("data/val.txt"):
        args.val_dataset = "data/val.txt"
    if args.val_dataset == "":
        args.val_dataset = None
    if args.sample_length is not None and args.sample_length >= WINDOW:
        parser.error(f"--sample-length must be below {WINDOW}, got {args.sample_length}")
    if not re.fullmatch(r"[\w.-]+", args.run_name) or args.run_name in {".", ".."}:
        parser.error(f"--run-name must be a plain folder name, got {args.run_name!r}")
    if not re.fullmatch(r"[\w.-]+", args.model) or args.model in {".", ".."}:
        parser.error(f"--model must be a model name such as 124M, got {args.model!r}")
    for option, path in [("--dataset", args.dataset), ("--val-dataset", args.val_dataset)]:
        if path is not None and not os.path.isfile(path):
            parser.error(f"{option} {path}: no such file")
        if path is not None and os.path.getsize(path) == 0:
            parser.error(f"{option} {path} is empty")
    return args


def main(argv=None):
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    run_dir = os.path.join(args.checkpoint_dir, args.run_name)
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    try:
        with exclusive_run(run_dir):
            card, interrupted = train(args)
    except (TrainingError, model_card.ModelCardError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. an unreadable corpus, or a full disk before training
        print(f"train.py: error: {first_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ntrain.py: interrupted; checkpoints already saved in {run_dir} are kept", file=sys.stderr)
        return 130
    print(f"{run_dir}: {describe(card)}; model card {model_card.card_path(run_dir)}")
    # The service's speculative decoding guesses from the text the model learnt.
    try:
        print(f"draft table {corpus_drafts.write_table(run_dir, args.dataset)}")
    except (OSError, ValueError) as error:  # e.g. a dataset that is not UTF-8 text
        print(f"train.py: no draft table ({error}); the service decodes without one", file=sys.stderr)
    if interrupted:
        print(f"train.py: interrupted; continue with: python train.py --resume --run-name {args.run_name}",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
