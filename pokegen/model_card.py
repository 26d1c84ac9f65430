"""The model card: a small JSON file next to a checkpoint saying what it is.

`train.py` writes `checkpoint/<run>/pokegen.json` after every training session; the
service reads it to name the model it serves and to show it at /info. Fields:

- run_name (the run the card was written for; the service serves the model under this name),
  base ({"kind": "gpt2", "model_name": "124M"} or {"kind": "scratch", "preset": "tiny"}),
  hparams (the model's shape), training (hyperparameters of the latest session)
- corpus: {"train": {path, sha256, bytes, tokens}, "val": ... or null}
- steps (total optimizer steps of the run), train_loss and val_loss (mean loss on fixed
  windows at the end), val_loss_start (before the run's first step), interrupted, date (UTC)
- history: one entry per training session (from_step, to_step, losses, seconds, date)
"""
from __future__ import annotations

import hashlib
import json
import os

from pokegen.atomic_files import atomic_write_text

CARD_NAME = "pokegen.json"
CARD_FORMAT = "pokegen-model-card/1"


class ModelCardError(ValueError):
    """A card that is there but is not a JSON object."""


def file_fingerprint(path, tokens=None):
    """Path, sha256 and size of a corpus file (plus its token count when known)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    fingerprint = {"path": str(path), "sha256": digest.hexdigest(), "bytes": os.path.getsize(path)}
    if tokens is not None:
        fingerprint["tokens"] = int(tokens)
    return fingerprint


def card_path(run_dir):
    return os.path.join(run_dir, CARD_NAME)


def read_model_card(run_dir) -> dict | None:
    """The run's card, or None when the run has none; ModelCardError when it cannot be read."""
    try:
        with open(card_path(run_dir), encoding="utf-8") as f:
            card = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ModelCardError(f"{CARD_NAME} in {run_dir} is not valid JSON: {error}") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"{CARD_NAME} in {run_dir} is not a JSON object")
    return card


def model_name(card: dict | None, run_name: str) -> str:
    """The name the model is served under: the run its card was written for, else the run
    folder's name (a model without a card, or a card without a run name)."""
    return str((card or {}).get("run_name") or run_name)


def updated_card(previous, *, run_name, base, hparams, training, corpus, session):
    """The card after one more training session; previous is the run's card or None.

    The run's origin (base, first validation loss, history) carries over from earlier
    sessions, so a resumed run still says where it started.
    """
    previous = previous or {}
    history = list(previous.get("history", [])) + [session]
    val_loss_start = previous.get("val_loss_start", session.get("val_loss_start"))
    return {
        "format": CARD_FORMAT,
        "run_name": run_name,
        "base": previous.get("base", base),
        "hparams": hparams,
        "training": training,
        "corpus": corpus,
        "steps": session["to_step"],
        "train_loss": session.get("train_loss"),
        "val_loss": session.get("val_loss_end"),
        "val_loss_start": val_loss_start,
        "interrupted": session["interrupted"],
        "date": session["date"],
        "history": history,
    }


def write_model_card(run_dir, card):
    """Write the card; readers never see half a file."""
    path = card_path(run_dir)
    atomic_write_text(path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return path
