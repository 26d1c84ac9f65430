"""A reader of a generation's pieces that falls behind gets what waits for it in one
piece per episode, in order, never mixed between episodes and never lost."""
import threading

import pytest

from app.engine.generation import Generation
from app.engine.types import Busy, GenerationRequest


def finished(generation, texts, model="m"):
    for index, text in enumerate(texts):
        generation.complete(text, len(text), "length", model, index)


def test_pieces_queued_behind_the_first_come_joined():
    generation = Generation(GenerationRequest(prefix="Ash", length=8, truncate=False), [1], 30)
    for piece in ("Ash", " and", " Pikachu", " run"):
        generation.push_piece(piece)
    finished(generation, [" and Pikachu run"])
    assert list(generation.pieces(timeout=5)) == ["Ash and Pikachu run"]


def test_episodes_stay_apart_and_in_order():
    generation = Generation(GenerationRequest(prefix="Ash", length=8, n=2, truncate=False),
                            [1], 30)
    for index, piece in ((0, "a"), (0, "b"), (1, "x"), (0, "c"), (1, "y"), (1, "z")):
        generation.push_piece(piece, index)
    finished(generation, ["abc", "xyz"])
    assert list(generation.indexed_pieces(timeout=5)) == [(0, "ab"), (1, "x"), (0, "c"),
                                                           (1, "yz")]


def test_a_reader_that_keeps_up_gets_each_piece_as_it_comes():
    generation = Generation(GenerationRequest(prefix="Ash", length=8, truncate=False), [1], 30)
    read, ready = [], threading.Event()

    def reader():
        for piece in generation.pieces(timeout=5):
            read.append(piece)
            ready.set()
    thread = threading.Thread(target=reader)
    thread.start()
    for piece in ("one", "two", "three"):
        ready.clear()
        generation.push_piece(piece)
        assert ready.wait(5)
    finished(generation, ["onetwothree"])
    thread.join(5)
    assert read == ["one", "two", "three"]


def test_a_request_that_never_got_a_slot_raises_from_its_pieces():
    generation = Generation(GenerationRequest(prefix="Ash", length=8), [1], 30)
    generation.fail(Busy("waited 30 s for a generation slot", retry_after=3))
    with pytest.raises(Busy) as refused:
        list(generation.pieces(timeout=5))
    assert refused.value.retry_after == 3
