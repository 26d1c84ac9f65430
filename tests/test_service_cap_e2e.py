"""The cap, for real: one generation at a time and one waiting request, behind
nginx. A second request waits its turn, a third is refused at once with 503
and Retry-After, a client that goes away frees its slot, and the page says
"busy" and lets the user retry when told to."""
import os
import threading
import time

import pytest
import requests

from live_generation import SLOW_TURNS, FrozenLoop, read_events
from pokegen.service_stack import short_temp_dir, wait_for

pytestmark = pytest.mark.e2e

LONG = "/stream?prefix=Ash&length=1023&truncate=0"


@pytest.fixture(scope="module")
def stack(start_stack):
    freeze_file = os.path.join(short_temp_dir("pokegen-freeze-"), "freeze")
    service = start_stack(GENERATION_CONCURRENCY=1, QUEUE_SIZE=1, QUEUE_TIMEOUT=120,
                          POKEGEN_FAULT_FREEZE_FILE=freeze_file, **SLOW_TURNS)
    service.freeze_file = freeze_file
    return service


class LongGeneration:
    """A long streamed generation holding the only slot until it is read to the end."""

    def __init__(self, stack):
        self.response = requests.get(stack.url + LONG, stream=True, timeout=300)
        assert self.response.status_code == 200
        self.events = read_events(self.response)
        assert next(self.events)[0] == "piece"  # decoding: the slot is taken

    def finish(self) -> dict:
        event, data = list(self.events)[-1]
        self.response.close()
        assert event == "done"
        return data


def test_second_request_waits_and_third_is_refused_at_once(stack):
    holder = LongGeneration(stack)
    # The loop held while we look: a fast CPU could write the holder's tokens before we do.
    frozen = FrozenLoop(stack.freeze_file).__enter__()
    waiting = {}

    def second_request():
        response = stack.get("/?prefix=Misty&length=5&truncate=0", timeout=300)
        waiting.update(status=response.status_code, finished=time.monotonic())

    waiter = threading.Thread(target=second_request)
    waiter.start()
    assert wait_for(lambda: stack.metric("pokegen_queue_depth") == 1)

    started = time.monotonic()
    third = stack.get("/?prefix=Brock&length=5")
    refused_in = time.monotonic() - started
    assert third.status_code == 503
    assert int(third.headers["Retry-After"]) >= 1
    assert third.json()["error"] and third.json()["retry_after"] >= 1
    assert refused_in < 2.0, f"the refusal took {refused_in:.1f} s"
    assert stack.get("/stream?prefix=Brock&length=5").status_code == 503

    assert "status" not in waiting  # still waiting for the slot
    frozen.__exit__()
    holder.finish()
    holder_done = time.monotonic()
    waiter.join(timeout=120)
    assert waiting["status"] == 200
    assert waiting["finished"] >= holder_done - 0.5  # it ran after the long one


def test_a_client_that_goes_away_frees_its_slot(stack):
    started = time.monotonic()
    holder = LongGeneration(stack)
    holder.response.close()  # the client disconnects mid-episode
    assert wait_for(lambda: stack.metric("pokegen_generations_in_flight") == 0, timeout=60)
    freed_after = time.monotonic() - started
    # A full episode of this length takes longer than that: it was cancelled.
    full = LongGeneration(stack).finish()
    print(f"slot freed {freed_after:.2f} s after the start; "
          f"a full episode takes {full['seconds']:.2f} s")
    assert freed_after < full["seconds"], (freed_after, full["seconds"])
    assert stack.get("/?prefix=Ash&length=5").status_code == 200


def test_the_page_says_busy_and_retries_after_the_wait(stack):
    from pokegen.browser import chromium_page

    with chromium_page() as page:
        page.goto(stack.url + "/")
        page.fill("#prefix", "Team Rocket")
        page.fill("#length", "64")
        # Two long episodes: one decoding, one waiting; the page's request finds no room.
        holder = LongGeneration(stack)
        queued = threading.Thread(target=stack.get, args=(LONG.replace("/stream", "/"),),
                                  kwargs={"timeout": 300})
        queued.start()
        assert wait_for(lambda: stack.metric("pokegen_queue_depth") == 1)
        page.click("#generate")
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        assert "busy" in page.inner_text("#error-message")
        assert page.is_disabled("#retry")
        assert page.inner_text("#retry").startswith("Retry in")

        holder.finish()
        queued.join(timeout=120)
        page.wait_for_selector("#retry:not([disabled])", timeout=330_000)
        page.click("#retry")
        page.wait_for_selector("#generate-form[data-state=done]", timeout=60_000)
        assert page.inner_text("#episode").startswith("Team Rocket")
        assert page.is_hidden("#error")
