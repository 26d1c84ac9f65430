"""The model card's one contract, for its writer (train.py) and its reader (the service): what
updated_card writes, read_model_card reads back, and the engine serves the model under the run
name the card gives; a card that is there but unreadable is one clear line."""
import json
import os

import pytest

from app.engine import Engine
from engine_models import copy_tiny_run, started_engine
from pokegen import model_card

SESSION = {"from_step": 0, "to_step": 4, "train_loss": 3.5, "val_loss_start": 8.3,
           "val_loss_end": 4.0, "interrupted": False, "date": "2024-05-01T12:00:00+00:00"}


def card_for(run_name: str) -> dict:
    return model_card.updated_card(None, run_name=run_name, base={"kind": "scratch", "preset": "tiny"},
                                   hparams={"n_layer": 4}, training={"steps": 4}, corpus={"train": None},
                                   session=SESSION)


def test_what_is_written_is_read_back(tmp_path):
    card = card_for("run1")
    path = model_card.write_model_card(str(tmp_path), card)
    assert path == os.path.join(str(tmp_path), model_card.CARD_NAME)
    assert model_card.read_model_card(str(tmp_path)) == card
    assert [p.name for p in tmp_path.iterdir()] == [model_card.CARD_NAME]  # no temporary left


def test_a_run_without_a_card_has_none_and_keeps_its_folder_name(tmp_path):
    assert model_card.read_model_card(str(tmp_path)) is None
    assert model_card.model_name(None, "run7") == "run7"


@pytest.mark.parametrize("text, reason", [("{not json", "is not valid JSON"),
                                          ('["a", "list"]', "is not a JSON object")])
def test_an_unreadable_card_is_one_line_naming_it(tmp_path, text, reason):
    (tmp_path / model_card.CARD_NAME).write_text(text)
    with pytest.raises(model_card.ModelCardError) as error:
        model_card.read_model_card(str(tmp_path))
    assert str(error.value).startswith(f"{model_card.CARD_NAME} in {tmp_path} {reason}")
    assert "\n" not in str(error.value)


def test_the_engine_serves_the_model_under_its_cards_run_name(tmp_path):
    # A run trained as "episodes-v2", then copied into the folder the service reads as run1.
    run_dir = copy_tiny_run(str(tmp_path))
    model_card.write_model_card(run_dir, card_for("episodes-v2"))
    engine = started_engine(str(tmp_path))
    try:
        assert engine.model_name == "episodes-v2"
        assert engine.info["card"]["run_name"] == "episodes-v2"
    finally:
        engine.close()


def test_the_engine_refuses_an_unreadable_card_in_one_line(tmp_path):
    run_dir = copy_tiny_run(str(tmp_path))
    with open(os.path.join(run_dir, model_card.CARD_NAME), "w") as f:
        json.dump(["not", "a", "card"], f)
    engine = Engine(str(tmp_path), "run1")
    engine.start()
    try:
        assert not engine.wait_ready(60)
        assert engine.state == "failed"
        assert engine.error == f"{model_card.CARD_NAME} in {run_dir} is not a JSON object"
    finally:
        engine.close()


def test_resuming_a_run_whose_card_is_unreadable_is_one_line(tmp_path, capsys):
    import train

    run_dir = copy_tiny_run(str(tmp_path / "checkpoint"))
    (tmp_path / "checkpoint" / "run1" / model_card.CARD_NAME).write_text("{not json")
    (tmp_path / "train.txt").write_text("Ash and Pikachu arrive in Pallet Town.\n" * 400)
    exit_code = train.main(["--resume", "--dataset", str(tmp_path / "train.txt"),
                            "--checkpoint-dir", str(tmp_path / "checkpoint"), "--run-name", "run1"])
    assert exit_code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"train.py: error: {model_card.CARD_NAME} in {run_dir} is not valid JSON: "
                     "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"]
