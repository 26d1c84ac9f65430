"""The page in headless Chromium against the real stack (nginx + uWSGI on
127.0.0.1): its controls reach the request, a share link writes the same
episode again, Stop cancels the generation in the engine, a refusal shows its
reason and retry time, and every control is labelled and keyboard-reachable.

One generation slot and no queue, so a single held request fills the service;
the engine counts every token it makes (pokegen_engine_tokens_generated), and
its decoding loop is frozen on demand through app/engine/faults.py.
"""
import os
import time
import unicodedata
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from pokegen.browser import chromium_page
from live_generation import SLOW_TURNS, FrozenLoop, read_events
from pokegen.service_stack import short_temp_dir, wait_for

pytestmark = pytest.mark.e2e

TOKENS = "pokegen_engine_tokens_generated"
IN_FLIGHT = "pokegen_generations_in_flight"
DONE = "#generate-form[data-state=done]"


@pytest.fixture(scope="module")
def freeze_file():
    return os.path.join(short_temp_dir("pokegen-freeze-"), "freeze")


@pytest.fixture(scope="module")
def stack(start_stack, freeze_file):
    return start_stack(GENERATION_CONCURRENCY=1, QUEUE_SIZE=0,
                       SPECULATIVE_TOKENS=0,  # one token a step: tokens count steps
                       POKEGEN_FAULT_FREEZE_FILE=freeze_file, **SLOW_TURNS)


def idle(stack) -> bool:
    return stack.metric(IN_FLIGHT) == 0


def stream_queries(page) -> list:
    """The query of every /stream request the page makes, parsed, as they are made."""
    queries = []
    page.on("request", lambda request: "/stream?" in request.url and queries.append(
        {name: values[0] for name, values in parse_qs(urlsplit(request.url).query).items()}))
    return queries


def words(text: str) -> str:
    # Control characters (which a random model writes) are dropped by the clipboard,
    # and some of them count as spaces to str.split.
    return " ".join("".join(c for c in text if c in "\t\n\r" or unicodedata.category(c) != "Cc")
                    .split())


def test_the_controls_reach_the_request_and_length_bounds_the_answer(stack):
    with chromium_page() as page:
        queries = stream_queries(page)
        page.goto(stack.url + "/")
        page.fill("#prefix", "Misty went fishing")
        page.fill("#length", "12")
        page.fill("#temperature", "1.25")
        page.fill("#seed", "7")
        assert page.inner_text("#temperature-value") == "1.25"
        before = stack.metric(TOKENS)
        page.click("#generate")
        page.wait_for_selector(DONE, timeout=60_000)
        assert wait_for(lambda: idle(stack))
        generated = stack.metric(TOKENS) - before
        assert queries == [{"prefix": "Misty went fishing", "length": "12",
                            "temperature": "1.25", "seed": "7"}]
        details = page.inner_text("#details")
        assert details.startswith("12 tokens in ") and "reached the length asked for" in details
        assert generated == 12
        shown = page.inner_text("#episode")
        assert page.script_errors == []  # the strict CSP let every script run
    # The same query asked directly gives the page's text: the service used every value.
    direct = stack.get("/", params=queries[0]).json()
    assert words(shown) == words(direct["text"]) and direct["tokens"] == 12
    other_seed = stack.get("/", params={**queries[0], "seed": "8"}).json()
    assert words(other_seed["text"]) != words(shown)


def test_a_share_link_writes_the_same_episode_again(stack):
    prefix = "Team Rocket stole\nthe bikes & ran"  # a line break and a '&' survive the link
    with chromium_page() as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page.goto(stack.url + "/")
        page.fill("#prefix", prefix)
        page.fill("#length", "40")
        page.fill("#temperature", "1.5")
        page.fill("#seed", "1234")
        page.click("#generate")
        page.wait_for_selector(DONE, timeout=60_000)
        written = page.inner_text("#episode")
        link = page.input_value("#share-link")
        assert page.url == link  # the address bar holds it too: a reload keeps the episode
        assert urlsplit(link).path == "/" and parse_qs(urlsplit(link).fragment) == {
            "prefix": [prefix], "length": ["40"], "temperature": ["1.5"], "seed": ["1234"]}

        page.click("#copy-link")
        assert page.evaluate("navigator.clipboard.readText()") == link
        assert page.inner_text("#status") == "Link copied."
        page.click("#copy-text")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied.startswith(prefix) and words(copied) == words(written)
        assert page.script_errors == []

    with chromium_page() as fresh:  # whoever receives the link: a new browser
        queries = stream_queries(fresh)
        fresh.goto(link)
        fresh.wait_for_selector(DONE, timeout=60_000)
        assert fresh.inner_text("#episode") == written
        assert queries == [{"prefix": prefix, "length": "40", "temperature": "1.5",
                            "seed": "1234"}]
        assert (fresh.input_value("#prefix"), fresh.input_value("#length"),
                fresh.input_value("#temperature"), fresh.input_value("#seed")) == (
            prefix, "40", "1.5", "1234")
        assert fresh.input_value("#share-link") == link
        assert fresh.script_errors == []


def test_dice_and_another_episode_pick_new_seeds(stack):
    with chromium_page() as page:
        queries = stream_queries(page)
        page.goto(stack.url + "/")
        first_seed = page.input_value("#seed")
        assert first_seed.isdigit()  # the page picks one before anything is asked
        page.click("#dice")
        assert page.input_value("#seed") not in ("", first_seed)
        page.fill("#length", "30")
        page.click("#generate")
        page.wait_for_selector(DONE, timeout=60_000)
        first_text = page.inner_text("#episode")
        page.click("#another")
        page.wait_for_selector(DONE, timeout=60_000)
        assert len(queries) == 2 and queries[1]["seed"] != queries[0]["seed"]
        assert queries[1]["seed"] == page.input_value("#seed")
        assert {k: v for k, v in queries[1].items() if k != "seed"} == {
            k: v for k, v in queries[0].items() if k != "seed"}
        assert page.inner_text("#episode") != first_text
        assert page.input_value("#share-link").endswith("seed=" + queries[1]["seed"])
        assert page.script_errors == []


def test_every_control_is_labelled_and_works_from_the_keyboard(stack):
    with chromium_page() as page:
        queries = stream_queries(page)
        page.goto(stack.url + "/")
        for label, control in [("Beginning of the episode", "prefix"), ("Length", "length"),
                               ("Temperature", "temperature"), ("Seed", "seed"),
                               ("Pick a new seed", "dice")]:
            assert page.get_by_label(label, exact=label != "Temperature").get_attribute(
                "id") == control, label
        for name in ("Generate", "Another episode", "Stop"):
            assert page.get_by_role("button", name=name, exact=True).count() == 1, name
        # Nothing inline for the CSP to block.
        assert page.evaluate("document.querySelectorAll('[style], script:not([src])').length") == 0
        assert "0 always takes the likeliest" in page.inner_text("#temperature-help")

        # Tab walks through every control in reading order (Stop is off while idle).
        page.focus("#prefix")
        reached = []
        for _ in range(6):
            page.keyboard.press("Tab")
            reached.append(page.evaluate("document.activeElement.id"))
        assert reached == ["length", "temperature", "seed", "dice", "generate", "another"]

        # Set everything with keys alone, then Ctrl+Enter in the text generates.
        page.focus("#length")
        page.keyboard.press("Control+A")
        page.keyboard.type("20")
        page.focus("#temperature")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")  # two steps of 0.05 up from 0.7
        page.focus("#seed")
        page.keyboard.press("Control+A")
        page.keyboard.type("99")
        page.focus("#prefix")
        page.keyboard.press("Control+A")
        page.keyboard.type("Brock cooked")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector(DONE, timeout=60_000)
        assert queries == [{"prefix": "Brock cooked", "length": "20", "temperature": "0.8",
                            "seed": "99"}]
        assert page.input_value("#prefix") == "Brock cooked"  # no line break typed
        # Once there is an episode, its link and both copy buttons come next (Stop is off again).
        page.focus("#another")
        reached = []
        for _ in range(3):
            page.keyboard.press("Tab")
            reached.append(page.evaluate("document.activeElement.id"))
        assert reached == ["share-link", "copy-link", "copy-text"]
        assert page.script_errors == []


def test_stop_cancels_the_generation_in_the_engine(stack, freeze_file):
    assert wait_for(lambda: idle(stack))
    before = stack.metric(TOKENS)
    with chromium_page() as page:
        page.goto(stack.url + "/")
        page.fill("#prefix", "Ash")
        page.fill("#length", "1000")
        page.fill("#seed", "5")
        page.click("#generate")
        page.wait_for_selector("#generate-form[data-state=writing]", timeout=60_000)
        assert page.is_enabled("#stop")
        with FrozenLoop(freeze_file):  # however fast the machine, the episode is unfinished
            at_stop = stack.metric(TOKENS)
            page.click("#stop")
            time.sleep(2.0)  # nginx drops its upstream connection
        assert wait_for(lambda: idle(stack), timeout=30)
        after = stack.metric(TOKENS)
        time.sleep(1.0)
        assert stack.metric(TOKENS) == after  # the counter stopped rising
        written, left = at_stop - before, 1000 - (at_stop - before)
        print(f"Stop after {written:.0f} of 1000 tokens: {after - at_stop:.0f} more generated")
        # The close reaches the app when it writes the next piece: a few steps of this
        # tiny model pass meanwhile, never the hundreds left to write.
        assert after - at_stop < left / 10, (written, after - at_stop)

        assert page.get_attribute("#generate-form", "data-state") == "stopped"
        assert page.inner_text("#status") == "Stopped."
        assert page.inner_text("#episode").startswith("Ash")  # what was written stays
        assert page.is_hidden("#error") and page.is_disabled("#stop")
        assert page.script_errors == []


def test_a_refusal_shows_its_reason_and_retry_time(stack, freeze_file):
    assert wait_for(lambda: idle(stack))
    holder = requests.get(stack.url + "/stream?prefix=Ash&length=1000&truncate=0", stream=True,
                          timeout=120)
    assert next(read_events(holder))[0] == "piece"  # the only slot is taken
    with FrozenLoop(freeze_file), chromium_page() as page:  # the holder keeps the slot
        reason = stack.get("/stream?prefix=Brock&length=5").json()["error"]
        page.goto(stack.url + "/")
        page.fill("#length", "5")
        refusals = []
        page.on("response", lambda r: "/stream?" in r.url and refusals.append(
            (r.status, r.headers.get("retry-after"))))
        # Every text the retry button shows, to see the countdown.
        page.evaluate("""() => {
            const button = document.getElementById('retry');
            window.retryTexts = [];
            new MutationObserver(() => window.retryTexts.push(button.textContent))
              .observe(button, {childList: true, characterData: true, subtree: true});
        }""")
        page.click("#generate")
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        [(status, retry_after)] = refusals
        assert status == 503 and int(retry_after) >= 1
        message = page.inner_text("#error-message")
        assert message == f"The generator is busy: {reason}. Retry after {retry_after} s."
        assert "generation slots are busy" in reason
        page.wait_for_selector("#retry:not([disabled])", timeout=int(retry_after) * 1000 + 5000)
        assert f"Retry in {retry_after} s" in page.evaluate("window.retryTexts")
        assert page.inner_text("#retry") == "Retry"

        holder.close()
        os.remove(freeze_file)  # the loop goes on: the holder is cancelled, the slot freed
        assert wait_for(lambda: idle(stack), timeout=30)
        page.click("#retry")
        page.wait_for_selector(DONE, timeout=60_000)
        assert page.is_hidden("#error") and page.inner_text("#episode")
        # Chromium logs the refused request itself; nothing else went wrong.
        assert [e for e in page.script_errors if "status of 503" not in e] == []


def test_copy_works_without_the_clipboard_api_over_plain_http(stack):
    # Browsers keep navigator.clipboard for secure contexts: over plain HTTP from a
    # host that is not this machine, as on a server reached by its name, it is absent.
    with chromium_page("--host-resolver-rules=MAP pokegen.test 127.0.0.1") as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page.goto(f"http://pokegen.test:{stack.port}/")
        assert page.evaluate("window.isSecureContext") is False
        assert page.evaluate("typeof navigator.clipboard") == "undefined"
        page.fill("#length", "20")
        page.click("#generate")
        page.wait_for_selector(DONE, timeout=60_000)
        link = page.input_value("#share-link")
        assert link.startswith(f"http://pokegen.test:{stack.port}/#prefix=")

        # The clipboard is the browser's: a secure page of the same browser reads it.
        reader = page.context.new_page()
        reader.goto(stack.url + "/static/favicon.svg")
        page.bring_to_front()
        page.click("#copy-link")
        assert page.inner_text("#status") == "Link copied."
        assert reader.evaluate("navigator.clipboard.readText()") == link
        page.click("#copy-text")
        assert page.inner_text("#status") == "Text copied."
        copied = reader.evaluate("navigator.clipboard.readText()")
        assert words(copied) == words(page.inner_text("#episode"))
        assert page.script_errors == []
