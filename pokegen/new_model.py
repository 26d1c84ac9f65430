"""Build a new, randomly initialised model in GPT-2's own on-disk format.

GPT-2's weights cannot always be downloaded, so `train.py --from-scratch` starts from a
folder made here instead. The folder holds exactly what `gpt2.download_gpt2()` would
put in `models/<name>/`: a byte-level BPE tokenizer (`encoder.json` + `vocab.bpe`),
`hparams.json` and a TensorFlow checkpoint whose variables are created by
gpt-2-simple's own model code, so nothing downstream can tell the two apart.
The folder also has a `checkpoint` file, so it works as a run directory as well
(`gpt2.load_gpt2(sess, checkpoint_dir=parent, run_name=name)` loads it).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

from gpt_2_simple.src import encoder as gpt2_encoder
from gpt_2_simple.src import model as gpt2_model
import tensorflow as tf
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from pokegen.atomic_files import atomic_write_text, move_into_place
from pokegen.gpt2_format import END_OF_TEXT
from pokegen.model_card import CARD_NAME

# gpt-2-simple's finetune always samples 1024-token windows, so every preset keeps n_ctx 1024.
PRESETS = {
    # Trains in minutes on two cores; big enough to write word-level episode summaries.
    "tiny": {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_ctx": 1024, "n_vocab": 4096},
    "small": {"n_layer": 6, "n_embd": 512, "n_head": 8, "n_ctx": 1024, "n_vocab": 8192},
    # GPT-2 small's exact shape (the "124M" model), for speed and memory figures.
    "gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_ctx": 1024, "n_vocab": 50257},
}

# Used to train a tokenizer when no corpus is given (tests, benchmarks).
BUILTIN_TEXT = """\
Ash and Pikachu arrive in a new town and learn that a Gym Leader is waiting for challengers.
Misty and Brock argue about the best route through the forest while Team Rocket watches from a tree.
Jessie, James and Meowth set a trap, but Pikachu uses Thunderbolt and sends them blasting off again.
Later, the group meets a young trainer whose Bulbasaur refuses to battle, and Ash helps them.
The episode ends with the heroes setting off toward the next city, where a tournament begins.
"""


def _byte_alphabet():
    """The 256 single-byte symbols, in the order GPT-2 numbers them (ids 0-255)."""
    return list(gpt2_encoder.bytes_to_unicode().values())


def _learned_merges(corpus_files, vocab_size):
    """Train byte-level BPE with the `tokenizers` package; returns its merges by rank."""
    tokenizer = Tokenizer(models.BPE())
    # The same pre-tokenisation regex GPT-2's encoder applies, so both split text alike.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if corpus_files:
        tokenizer.train([str(path) for path in corpus_files], trainer=trainer)
    else:
        tokenizer.train_from_iterator([BUILTIN_TEXT], trainer=trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    # Older `tokenizers` releases store a merge as "a b", newer ones as ["a", "b"].
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def _filler_merges(alphabet, taken):
    """Valid extra merges (pairs of single bytes), rarest bytes first.

    They let a small corpus still yield a vocabulary of an exact size (GPT-2's 50257) in
    which every token is a real BPE merge that encodes and decodes losslessly.
    """
    rare_first = list(reversed(alphabet))
    for first in rare_first:
        for second in rare_first:
            if first + second not in taken:
                yield first, second


def train_tokenizer(corpus_files, out_dir, vocab_size):
    """Write `encoder.json` + `vocab.bpe` (GPT-2's format) into out_dir; return the vocab size.

    Ids follow GPT-2's layout: the 256 byte symbols, then one token per merge in rank
    order, then `<|endoftext|>` last. corpus_files=None trains on a small built-in text.
    """
    alphabet = _byte_alphabet()
    if vocab_size < len(alphabet) + 1:
        raise ValueError(f"vocab_size must be at least {len(alphabet) + 1}, got {vocab_size}")
    n_merges = vocab_size - len(alphabet) - 1

    token_ids = {symbol: index for index, symbol in enumerate(alphabet)}
    merges = []
    for first, second in _learned_merges(corpus_files, vocab_size):
        if len(merges) == n_merges:
            break
        if first + second not in token_ids:
            token_ids[first + second] = len(token_ids)
            merges.append((first, second))
    if len(merges) < n_merges:
        for first, second in _filler_merges(alphabet, token_ids):
            if len(merges) == n_merges:
                break
            token_ids[first + second] = len(token_ids)
            merges.append((first, second))
    token_ids[END_OF_TEXT] = len(token_ids)

    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "encoder.json"), json.dumps(token_ids, ensure_ascii=False))
    # gpt-2-simple skips the first line and drops the text after the last newline.
    bpe_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    atomic_write_text(os.path.join(out_dir, "vocab.bpe"), bpe_text)
    return len(token_ids)


def write_initial_checkpoint(out_dir, hparams, seed=0):
    """Save freshly initialised weights as `model.ckpt.*` plus a `checkpoint` file."""
    hp = gpt2_model.default_hparams()
    hp.override_from_dict(hparams)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        context = tf.compat.v1.placeholder(tf.int32, [1, None])
        gpt2_model.model(hparams=hp, X=context)  # creates the variables under GPT-2's names
        # Relative paths in the `checkpoint` file keep the folder valid after it is moved.
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, os.path.join(out_dir, "model.ckpt"))


def create_model_dir(model_dir, preset, corpus_files=None, seed=0):
    """Create model_dir holding a new model of the given preset; return its hparams.

    The folder is built next to its destination and renamed into place, so a crash
    never leaves a half-written model. An existing untrained model folder there is
    replaced; a trained run, or any other non-empty folder, is left alone and
    FileExistsError is raised.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    model_dir = os.path.abspath(model_dir)
    if os.path.isdir(model_dir) and os.listdir(model_dir):
        if not os.path.exists(os.path.join(model_dir, "hparams.json")):
            raise FileExistsError(f"{model_dir} exists and is not a model folder; not replacing it")
        trained = trained_run_marks(model_dir)
        if trained:
            raise FileExistsError(f"{model_dir} holds a trained run ({', '.join(trained)}); "
                                  "not replacing it with new random weights")
    parent = os.path.dirname(model_dir)
    os.makedirs(parent, exist_ok=True)

    hparams = dict(PRESETS[preset])
    build_dir = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(model_dir)}.building-")
    try:
        os.chmod(build_dir, 0o777 & ~_current_umask())  # mkdtemp makes it private
        hparams["n_vocab"] = train_tokenizer(corpus_files, build_dir, hparams["n_vocab"])
        atomic_write_text(os.path.join(build_dir, "hparams.json"), json.dumps(hparams, indent=2) + "\n")
        write_initial_checkpoint(build_dir, hparams, seed=seed)
        move_into_place(build_dir, model_dir)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    return hparams


def trained_run_marks(model_dir):
    """What shows that model_dir was trained: gpt-2-simple's step counter and
    step-numbered checkpoints, train.py's model card. A folder made here has none."""
    return sorted(name for name in os.listdir(model_dir)
                  if name in ("counter", CARD_NAME)
                  or (name.startswith("model-") and name.endswith(".index")))


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a new, randomly initialised model in GPT-2's format: a folder that "
                    "gpt-2-simple loads as a model and as a run.")
    parser.add_argument("model_dir", help="the folder to create, e.g. checkpoint/run1")
    parser.add_argument("--preset", choices=list(PRESETS), default="tiny", help="the model's shape")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same weights")
    args = parser.parse_args(argv)
    try:
        hparams = create_model_dir(args.model_dir, args.preset, seed=args.seed)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.model_dir}: a new {args.preset} model ({hparams['n_layer']} layers, "
          f"{hparams['n_embd']} wide, {hparams['n_vocab']}-token vocabulary)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
