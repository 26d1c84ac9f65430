"""The prompt-reading budget (app/engine/prefill_budget.py) against a simulated
CPU: steps cost what the model's shape makes them cost, with noise, and a
running stream must never wait much more than two of its decode steps."""
import random

import pytest

from app.engine.prefill_budget import PrefillBudget

PROMPT = 1000


def simulate(decode_step: float, row: float, per_position: float, most: int = 16,
             noise: float = 0.1, seed: int = 0) -> tuple[list[float], list[int]]:
    """Reads a PROMPT-token prefix beside one running stream. A step costs the decode
    row, plus for each prompt token its row and its attention over the positions
    before it; each step is up to `noise` slower at random (a busy machine)."""
    rng = random.Random(seed)
    budget, read, steps, chunks = PrefillBudget(most), 0, [], []
    for _ in range(20):  # the stream runs alone for a while first
        budget.observe(decode_step * (1 + rng.uniform(0, noise)), 0)
    while read < PROMPT:
        chunk = min(budget.tokens(), PROMPT - read)
        work = sum(row + per_position * position for position in range(read, read + chunk))
        seconds = (decode_step + work) * (1 + rng.uniform(0, noise))
        budget.observe(seconds, chunk)
        steps.append(seconds / decode_step)
        chunks.append(chunk)
        read += chunk
    return steps, chunks


# (decode step, row, attention per position), in seconds: a fast row with dear attention, a
# slow row with cheap attention, a step that is mostly weights (prompt tokens nearly free).
MACHINES = [(0.007, 0.0013, 0.000003), (0.010, 0.004, 0.0000005), (0.020, 0.0002, 0.0000002)]


@pytest.mark.parametrize("machine", MACHINES)
def test_a_running_stream_waits_about_two_steps_at_most(machine):
    steps, _ = simulate(*machine)
    # In decode steps: two, with the noise (10%) and the estimate trailing a cost that
    # grows with every position read. Sixteen tokens a step would reach 8-11 on
    # the first two machines.
    assert max(steps) <= 2.75
    assert sorted(steps)[int(0.95 * len(steps))] <= 2.3


def test_chunks_shrink_as_the_prompt_grows_dearer():
    _, chunks = simulate(0.007, 0.0013, 0.000003)
    assert chunks[0] == 1
    assert max(chunks[1:50]) > chunks[-1] >= 1


def test_cheap_prompt_tokens_are_read_up_to_the_most_allowed():
    _, chunks = simulate(0.020, 0.0002, 0.0000002, most=16)
    assert max(chunks) == 16 and sum(chunks) == PROMPT


def test_one_token_per_step_before_anything_is_known():
    budget = PrefillBudget(16)
    assert budget.tokens() == 1
    budget.observe(0.010, 3)  # no decode step seen yet: nothing to compare with
    assert budget.tokens() == 1
    budget.observe(0.010, 0)
    budget.observe(0.010, 4)  # prompt tokens that added nothing measurable
    assert budget.tokens() == 16
