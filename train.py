"""Train the episode generator with gpt-2-simple: fine-tune GPT-2, or a new model offline.

    python train.py                        # GPT-2 124M (downloaded once), 1500 steps -> checkpoint/run1
    python train.py --from-scratch tiny    # no download: a new small model in GPT-2's format
    python train.py --resume               # continue checkpoint/run1 from its last saved step

Both paths end in gpt-2-simple's own `finetune`, so the run folder loads with plain
`gpt2.load_gpt2(sess, run_name=...)`. Next to the checkpoint goes a model card
(`pokegen.json`, see pokegen/model_card.py). Ctrl-C saves a checkpoint; `--resume` goes on from it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

import argparse
import contextlib
import datetime
import fcntl
import io
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
from gpt_2_simple.src.load_dataset import load_dataset
import numpy as np
import requests
import tensorflow as tf
from tqdm import tqdm

from app.engine import corpus_drafts
from pokegen import model_card, new_model
from pokegen.atomic_files import atomic_write_text

GPT2_FILES = ["checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
              "model.ckpt.index", "model.ckpt.meta", "vocab.bpe"]
WINDOW = 1024  # gpt-2-simple's finetune trains on windows of exactly this many tokens
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

STEP_LINE = re.compile(r"^\[(\d+) \| [\d.]+\] loss=(\S+) avg=(\S+)$")
LARGE_MODEL_ADVICE = ("For larger models", "\tuse_memory_saving_gradients", "\tonly_train_transformer",
                      "\taccumulate_gradients")


class TrainingError(Exception):
    """A problem the user can fix; reported as one line."""


# --- the run folder -------------------------------------------------------------------------

def completed_steps(run_dir):
    """Steps already trained in run_dir (0 when it holds no checkpoint).

    The step in the latest checkpoint's name comes first: gpt-2-simple writes
    its `counter` after the checkpoint, by truncating it and writing again, so
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


def repair_counter(run_dir, step):
    """Makes `counter` say `step` (gpt-2-simple resumes from it and fails on an
    empty one), written whole or not at all."""
    path = os.path.join(run_dir, "counter")
    with contextlib.suppress(OSError):
        with open(path) as f:
            if f.read().strip() == str(step):
                return
    atomic_write_text(path, f"{step}\n")


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


def prepare_base_model(args, seed, run_dir, previous_card, workdir):
    """(model_dir, model_name, base) for gpt-2-simple's finetune to start from."""
    if args.resume:
        # Start from the run's own tokenizer and shape, whatever is in models/ now.
        base = (previous_card or {}).get("base") or {"kind": "unknown"}
        model_name = base.get("model_name") or f"scratch-{base.get('preset', 'model')}"
        resume_dir = os.path.join(workdir, model_name)
        os.makedirs(resume_dir)
        for name in ["hparams.json", "encoder.json", "vocab.bpe"]:
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(resume_dir, name))
        return workdir, model_name, base
    if args.from_scratch:
        model_name = f"scratch-{args.from_scratch}"
        print(f"Building a new {args.from_scratch} model in {os.path.join(args.model_dir, model_name)} "
              f"(tokenizer trained on {args.dataset})")
        new_model.create_model_dir(os.path.join(args.model_dir, model_name), args.from_scratch,
                                   corpus_files=[args.dataset], seed=seed)
        return args.model_dir, model_name, {"kind": "scratch", "preset": args.from_scratch}
    ensure_gpt2_weights(args.model_dir, args.model)
    return args.model_dir, args.model, {"kind": "gpt2", "model_name": args.model}


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


class LossEvaluator:
    """Mean next-token loss on fixed windows, with the weights being trained.

    Built before finetune's graph; finetune then runs with reuse=True and so shares
    these very variables.
    """

    def __init__(self, hparams):
        self.context = tf.compat.v1.placeholder(tf.int32, [1, None], name="eval_context")
        logits = gpt2_model.model(hparams=hparams, X=self.context)["logits"]
        self.loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.context[:, 1:], logits=logits[:, :-1]))

    def mean_loss(self, sess, windows):
        if not windows:
            return None
        return float(np.mean([sess.run(self.loss, {self.context: [window]}) for window in windows]))


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


class LearningRate:
    """A learning rate finetune's optimizer reads from a variable, set before every step.

    gpt-2-simple takes one learning rate; handing it a variable instead of a number lets
    the run follow a schedule without changing its training loop.
    """

    def __init__(self, settings):
        self.settings = settings
        self.variable = tf.Variable(settings["learning_rate"], trainable=False, dtype=tf.float32,
                                    name="learning_rate")
        self.value = tf.compat.v1.placeholder(tf.float32, [], name="learning_rate_value")
        self.assign = self.variable.assign(self.value)
        self.sess = None

    def set_for_step(self, step):
        self.sess.run(self.assign, {self.value: learning_rate_at(step, self.settings)})


# --- following finetune's progress ------------------------------------------------------------

class FinetuneMonitor(io.TextIOBase):
    """Reads what finetune prints, draws a progress bar and measures validation loss.

    gpt-2-simple reports each step only by printing `[step | seconds] loss=.. avg=..`,
    so its standard output is routed through here.
    """

    def __init__(self, out, *, first_step, last_step, val_every, validate, before_step=None,
                 hide_lines=()):
        self.out = out
        self.first_step, self.last_step = first_step, last_step
        self.val_every, self.validate = val_every, validate
        self.before_step = before_step or (lambda step: None)
        self.hide_lines = hide_lines
        self.pending = ""
        self.bar = None
        self.step = first_step - 1
        self.avg_loss = None
        self.val_loss_start = None
        self.val_loss = None
        self.interrupted = False

    def writable(self):
        return True

    def write(self, text):
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self._handle(line)
        return len(text)

    def flush(self):
        self.out.flush()

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _handle(self, line):
        step = STEP_LINE.match(line)
        if step:
            self._on_step(int(step.group(1)), float(step.group(2)), float(step.group(3)))
            return
        if line.startswith(self.hide_lines):
            return
        if line == "interrupted":
            self.interrupted = True
            line = f"interrupted at step {self.step}: saving a checkpoint"
        self._echo(line)
        if line == "Training...":
            self._start()

    def _start(self):
        self.before_step(self.step + 1)
        self.val_loss_start = self.val_loss = self.validate()
        if self.val_loss is not None:
            self._echo(f"step {self.step}: val_loss {self.val_loss:.3f}")
        self.bar = tqdm(total=self.last_step, initial=self.step, desc="training", unit="step",
                        file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        self._show_losses()

    def _on_step(self, step, loss, avg_loss):
        self.step, self.avg_loss = step, avg_loss
        self.before_step(step + 1)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
        if self.val_every and step % self.val_every == 0 and step < self.last_step:
            self.val_loss = self.validate()
            if self.val_loss is not None:
                self._echo(f"step {step}: loss {loss:.2f} avg {avg_loss:.2f} val_loss {self.val_loss:.3f}")
        self._show_losses(loss)

    def _show_losses(self, loss=None):
        if self.bar is None:
            return
        shown = {}
        if loss is not None:
            shown["loss"] = f"{loss:.2f}"
            shown["avg"] = f"{self.avg_loss:.2f}"
        if self.val_loss is not None:
            shown["val"] = f"{self.val_loss:.3f}"
        self.bar.set_postfix(shown, refresh=True)

    def _echo(self, line):
        if self.bar is not None:
            tqdm.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)


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


def load_corpora(enc, args, workdir):
    """Encode the corpora once: (path of the encoded training set, train chunks, val chunks, card entry)."""
    print(f"Encoding {args.dataset}")
    train_chunks = encode_corpus(enc, args.dataset)
    train_tokens = sum(len(chunk) for chunk in train_chunks)
    if train_tokens // len(train_chunks) <= WINDOW:
        raise TrainingError(f"{args.dataset} is too small: {train_tokens} tokens, and training "
                            f"samples windows of {WINDOW}; give it more text")
    # finetune reads pre-encoded .npz files as they are: no second encoding pass.
    encoded_path = os.path.join(workdir, "train.npz")
    np.savez(encoded_path, *train_chunks)
    val_chunks = encode_corpus(enc, args.val_dataset) if args.val_dataset else []
    corpus = {"train": model_card.file_fingerprint(args.dataset, train_tokens),
              "val": model_card.file_fingerprint(args.val_dataset, sum(map(len, val_chunks)))
              if args.val_dataset else None}
    return encoded_path, train_chunks, val_chunks, corpus


def train(args):
    """Run one training session; returns (model card, interrupted)."""
    run_dir = os.path.join(args.checkpoint_dir, args.run_name)
    start_step = check_run_dir(run_dir, args.resume)
    previous_card = model_card.read_model_card(run_dir) if args.resume else None
    settings = resolve_hyperparameters(args, previous_card)
    if settings["steps"] <= start_step:
        raise TrainingError(f"{run_dir} is already at step {start_step}; "
                            f"ask for more with --steps (more than {start_step})")

    if args.resume:
        repair_counter(run_dir, start_step)
    # finetune draws its training windows with `random`; a resumed session draws new ones.
    random.seed(settings["seed"] + start_step)
    np.random.seed(settings["seed"] + start_step)
    with tempfile.TemporaryDirectory(prefix="pokegen-train-") as workdir:
        model_dir, model_name, base = prepare_base_model(args, settings["seed"], run_dir, previous_card,
                                                        workdir)
        base_path = os.path.join(model_dir, model_name)
        with open(os.path.join(base_path, "hparams.json")) as f:
            hparams = json.load(f)
        encoded_path, train_chunks, val_chunks, corpus = load_corpora(
            gpt2_encoder.get_encoder(base_path), args, workdir)

        tf.compat.v1.reset_default_graph()
        tf.compat.v1.set_random_seed(settings["seed"])
        gpt2_hparams = gpt2_model.default_hparams()
        gpt2_hparams.override_from_dict(hparams)
        evaluator = LossEvaluator(gpt2_hparams)  # first: finetune reuses its variables
        learning_rate = LearningRate(settings)
        val_windows, train_windows = evaluation_windows(val_chunks), evaluation_windows(train_chunks)
        sess = learning_rate.sess = gpt2.start_tf_sess()
        monitor = FinetuneMonitor(
            sys.stdout, first_step=start_step + 1, last_step=settings["steps"],
            val_every=settings["val_every"], validate=lambda: evaluator.mean_loss(sess, val_windows),
            before_step=learning_rate.set_for_step,
            hide_lines=LARGE_MODEL_ADVICE if base.get("kind") != "gpt2" else ())
        started = time.time()
        try:
            with contextlib.redirect_stdout(monitor):
                gpt2.finetune(
                    sess, encoded_path, steps=settings["steps"] - start_step,
                    model_name=model_name, model_dir=model_dir,
                    batch_size=settings["batch_size"], learning_rate=learning_rate.variable,
                    accumulate_gradients=settings["accumulate_gradients"],
                    restore_from="latest", run_name=args.run_name, checkpoint_dir=args.checkpoint_dir,
                    sample_every=settings["sample_every"], sample_length=settings["sample_length"],
                    save_every=settings["save_every"], print_every=1, reuse=True)
        except (OSError, tf.errors.OpError) as error:
            # A full disk (or a file size limit) while saving: the last complete
            # checkpoint stays, as TensorFlow renames a checkpoint into place only when whole.
            raise TrainingError(f"training stopped at step {monitor.step}: "
                                f"{first_line(error)}; the checkpoints saved before in "
                                f"{run_dir} are kept (continue with --resume)") from None
        finally:
            monitor.close_bar()
        seconds = time.time() - started

        print("Measuring final losses")
        session = {
            "from_step": start_step, "to_step": completed_steps(run_dir),
            "train_loss": evaluator.mean_loss(sess, train_windows),
            "last_avg_loss": monitor.avg_loss,
            "val_loss_start": monitor.val_loss_start,
            "val_loss_end": evaluator.mean_loss(sess, val_windows),
            "seconds": round(seconds, 1),
            "interrupted": monitor.interrupted,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        sess.close()

    card = model_card.updated_card(previous_card, run_name=args.run_name, base=base, hparams=hparams,
                                   training=settings, corpus=corpus, session=session)
    model_card.write_model_card(run_dir, card)
    return card, monitor.interrupted


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
    """SIGTERM (`docker stop`, systemd, kill) does what Ctrl-C does: gpt-2-simple
    catches the KeyboardInterrupt, saves a checkpoint and returns. Further
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
        description="Train the episode generator with gpt-2-simple: fine-tune GPT-2 (downloaded "
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
