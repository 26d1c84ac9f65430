"""Reading a gpt-2-simple run directory: hyperparameters, tokenizer, model card
and the weights, by variable name.

Everything that can be wrong with a checkpoint (missing folder, no saved step,
unreadable or truncated files, a variable of the wrong shape) becomes one
`ModelLoadError` with a one-line message, so the service can say what is wrong
without a traceback.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from pokegen.model_card import ModelCardError, read_model_card

from .types import ModelLoadError


@dataclass(frozen=True)
class HParams:
    n_vocab: int
    n_ctx: int
    n_embd: int
    n_head: int
    n_layer: int

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def as_dict(self) -> dict:
        return {
            "n_vocab": self.n_vocab,
            "n_ctx": self.n_ctx,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_layer": self.n_layer,
        }


@dataclass
class Checkpoint:
    run_dir: str
    path: str  # the checkpoint prefix, e.g. .../run1/model-1500
    hparams: HParams
    card: dict | None


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].strip()


def read_hparams(run_dir: str) -> HParams:
    path = os.path.join(run_dir, "hparams.json")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        hparams = HParams(**{k: int(raw[k]) for k in
                             ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")})
    except FileNotFoundError:
        raise ModelLoadError(f"no hparams.json in {run_dir}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"hparams.json in {run_dir} is not valid: {first_line(e)}") from None
    if min(hparams.as_dict().values()) <= 0 or hparams.n_embd % hparams.n_head:
        raise ModelLoadError(f"hparams.json in {run_dir} has impossible sizes: {hparams.as_dict()}")
    return hparams


def open_checkpoint(checkpoint_dir: str, run_name: str) -> Checkpoint:
    """Finds the latest saved step of a run; reads no weights yet."""
    import tensorflow as tf

    run_dir = os.path.join(checkpoint_dir, run_name)
    if not os.path.isdir(run_dir):
        raise ModelLoadError(f"checkpoint folder {run_dir} does not exist")
    hparams = read_hparams(run_dir)
    try:
        path = tf.train.latest_checkpoint(run_dir)
    except Exception as e:  # a garbled 'checkpoint' index file
        raise ModelLoadError(f"cannot read the checkpoint index in {run_dir}: {first_line(e)}") from None
    if path is None:
        raise ModelLoadError(f"no saved model step in {run_dir} (no 'checkpoint' file, or its weights are gone)")
    try:
        card = read_model_card(run_dir)
    except ModelCardError as e:
        raise ModelLoadError(str(e)) from None
    return Checkpoint(run_dir=run_dir, path=path, hparams=hparams, card=card)


def layer_shapes(hparams: HParams) -> dict[str, tuple[int, ...]]:
    """Variable name (inside model/h<i>/) -> shape, as gpt-2-simple saves them."""
    e = hparams.n_embd
    return {
        "ln_1/g": (e,), "ln_1/b": (e,),
        "attn/c_attn/w": (1, e, 3 * e), "attn/c_attn/b": (3 * e,),
        "attn/c_proj/w": (1, e, e), "attn/c_proj/b": (e,),
        "ln_2/g": (e,), "ln_2/b": (e,),
        "mlp/c_fc/w": (1, e, 4 * e), "mlp/c_fc/b": (4 * e,),
        "mlp/c_proj/w": (1, 4 * e, e), "mlp/c_proj/b": (e,),
    }


def expected_shapes(hparams: HParams) -> dict[str, tuple[int, ...]]:
    shapes = {
        "model/wte": (hparams.n_vocab, hparams.n_embd),
        "model/wpe": (hparams.n_ctx, hparams.n_embd),
        "model/ln_f/g": (hparams.n_embd,),
        "model/ln_f/b": (hparams.n_embd,),
    }
    for i in range(hparams.n_layer):
        for name, shape in layer_shapes(hparams).items():
            shapes[f"model/h{i}/{name}"] = shape
    return shapes


class WeightReader:
    """Reads one weight at a time, so that at most one tensor is held twice
    (as numpy and inside the session) while the model loads."""

    def __init__(self, checkpoint: Checkpoint):
        import tensorflow as tf

        self.checkpoint = checkpoint
        try:
            self.reader = tf.train.load_checkpoint(checkpoint.path)
            stored = self.reader.get_variable_to_shape_map()
        except Exception as e:
            raise ModelLoadError(f"cannot open checkpoint {checkpoint.path}: {first_line(e)}") from None
        expected = expected_shapes(checkpoint.hparams)
        for name, shape in expected.items():
            if name not in stored:
                raise ModelLoadError(f"checkpoint {checkpoint.path} has no variable {name}")
            if tuple(stored[name]) != shape:
                raise ModelLoadError(
                    f"checkpoint {checkpoint.path}: {name} has shape {tuple(stored[name])}, "
                    f"hparams.json implies {shape}")

    def read(self, name: str) -> np.ndarray:
        try:
            value = self.reader.get_tensor(name)
        except Exception as e:  # truncated or corrupt data file
            raise ModelLoadError(f"cannot read {name} from {self.checkpoint.path}: {first_line(e)}") from None
        value = np.asarray(value, dtype=np.float32)
        if not np.all(np.isfinite(value)):
            raise ModelLoadError(f"checkpoint {self.checkpoint.path}: {name} holds NaN or infinite values")
        return value
