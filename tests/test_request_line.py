"""The request line alone: one owner of every request from submission to the
end of its last sequence, with slots given back in one place."""
import pytest

from app.engine.admission import RequestLine
from app.engine.generation import Generation
from app.engine.types import Busy, ClientBusy, GenerationRequest


def generation(n=1, queue_timeout=30.0):
    return Generation(GenerationRequest(prefix="Ash", length=8, n=n), [1, 2], queue_timeout)


def test_free_slots_are_taken_at_submit_and_the_rest_waits_in_order():
    line = RequestLine(max_active=2, max_waiting=2)
    first, second, third = generation(), generation(), generation()
    for g in (first, second, third):
        line.submit(g, None, retry_after=1)
    assert (line.in_flight, line.queued) == (2, 1)
    assert line.next_admitted() is first
    line.started(first)
    assert line.next_admitted() is second
    line.started(second)
    assert line.next_admitted() is None
    line.sequence_ended()  # one of first's sequences: its slot passes to the third
    assert (line.in_flight, line.queued) == (2, 0) and line.next_admitted() is third


def test_a_request_for_several_episodes_is_never_overtaken():
    line = RequestLine(max_active=3, max_waiting=4)
    running = generation(n=2)
    line.submit(running, None, 1)
    line.started(running)
    wide, narrow = generation(n=3), generation(n=1)
    line.submit(wide, None, 1)
    line.submit(narrow, None, 1)  # one slot is free, but the wide one waits before it
    assert line.next_admitted() is None and line.queued == 2
    line.sequence_ended()
    assert line.next_admitted() is None  # 2 free of the 3 it needs
    line.sequence_ended()
    assert line.next_admitted() is wide and line.in_flight == 3 and line.queued == 1


def test_a_full_line_refuses_with_the_reason_and_holds_nothing():
    line = RequestLine(max_active=1, max_waiting=1)
    line.submit(generation(), None, 1)
    line.submit(generation(), None, 1)
    with pytest.raises(Busy) as refused:
        line.check(None, 1, retry_after=7)
    assert refused.value.retry_after == 7 and "1 generation slots are busy" in refused.value.reason
    with pytest.raises(Busy):
        line.submit(generation(), None, 7)
    assert (line.in_flight, line.queued) == (1, 1)


def test_a_cancelled_admitted_request_gives_its_slots_to_the_next():
    line = RequestLine(max_active=2, max_waiting=2)
    admitted, waiting = generation(n=2), generation(n=2)
    line.submit(admitted, None, 1)
    line.submit(waiting, None, 1)
    admitted.cancel()
    expired, cancelled = line.take_stale()
    assert (expired, cancelled) == ([], [admitted])
    assert line.next_admitted() is waiting and (line.in_flight, line.queued) == (2, 0)


def test_a_wait_that_ran_out_leaves_the_line_and_lets_smaller_ones_in():
    line = RequestLine(max_active=3, max_waiting=3)
    running = generation(n=2)
    line.submit(running, None, 1)
    line.started(running)
    wide = generation(n=3, queue_timeout=1.0)
    narrow = generation(n=1)
    line.submit(wide, None, 1)
    line.submit(narrow, None, 1)
    assert line.next_deadline() == wide.deadline
    expired, cancelled = line.take_stale(now=wide.deadline)
    assert (expired, cancelled) == ([wide], [])
    assert line.next_admitted() is narrow and (line.in_flight, line.queued) == (3, 0)


def test_closing_refuses_new_requests_and_returns_only_those_without_slots():
    line = RequestLine(max_active=1, max_waiting=2)
    admitted, waiting = generation(), generation()
    line.submit(admitted, None, 1)
    line.submit(waiting, None, 1)
    assert line.close("shutting down") == [waiting]
    with pytest.raises(Busy, match="shutting down"):
        line.submit(generation(), None, 1)
    assert line.next_admitted() is admitted
    assert line.take_all() == [admitted] and line.in_flight == 0


def test_a_client_holds_its_share_until_its_request_ends():
    line = RequestLine(max_active=4, max_waiting=4, max_per_client=3)
    two = generation(n=2)
    line.submit(two, "a", 1)
    line.submit(generation(), "b", 1)
    with pytest.raises(ClientBusy):
        line.submit(generation(n=2), "a", 1)
    assert line.per_client() == {"a": 2, "b": 1}
    two.end_unstarted("cancelled", "model")
    assert line.per_client() == {"b": 1}
    line.submit(generation(n=2), "a", 1)
    assert line.per_client() == {"a": 2, "b": 1}
