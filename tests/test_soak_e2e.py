"""A short soak (benchmarks/soak.py, every scenario in small) of the real
stack, with a cap and queue small enough (2 decoding, 2 waiting) that twice
its capacity is reached in seconds: every request is answered in time, no
5xx but the intended 503 with Retry-After, every refusal a JSON reason, the
queue really fills, streams left midway free their slots, slowloris
connections stop no one, oversized heads are a 4xx, memory is flat after the
warm-up. The full soak is `make soak`; its figures are in docs/reliability.md."""
import pytest

from benchmarks.soak import Sizes, format_report, run_soak, stack_rss
from benchmarks.soak_requests import Probe, problem_with

# Two decoding and two waiting: the overload's eight clients ask at once, so four
# are refused, and the mix keeps to the capacity, so its episodes are answered.
CAPACITY = dict(GENERATION_CONCURRENCY=2, QUEUE_SIZE=2)
SIZES = Sizes(mix=100, episodes=8, heads=6, left_streams=8, floods=8, oversized_heads=12,
              slowloris=40)


@pytest.fixture(scope="module")
def stack(start_stack):
    # One client address stands for every user: the per-client limits
    # (tested on their own) are opened up, as `make soak` does.
    return start_stack(**CAPACITY, RATE_LIMIT=1000, RATE_BURST=2000, CONNECTION_LIMIT=1000,
                       CLIENT_GENERATION_LIMIT=1000)


@pytest.fixture(scope="module")
def report(stack):
    report = run_soak(stack.url, stack_rss(stack.server_processes), sizes=SIZES,
                      concurrency=4, deadline=60, time_limit=300, seed=7)
    print(format_report(report, ".venv/bin/python -m pytest -s tests/test_soak_e2e.py"))
    return report


@pytest.mark.e2e
def test_every_request_is_answered_by_the_rules(report, stack):
    assert report.failures() == []
    assert sum(report.statuses.values()) == sum(len(s.outcomes) for s in report.scenarios)
    assert not {s for s in report.statuses if s != "no answer" and s >= 500} - {503}
    assert abs(report.rss_change) <= 0.05, report.rss_change
    assert "Traceback" not in stack.log(tail=200_000)


@pytest.mark.e2e
def test_the_mix_reaches_the_model_the_validation_and_nginx(report):
    mix = report.scenario("mix").statuses
    assert mix[200] > 30 and mix[400] > 20
    assert {404, 405, 413, 414} & set(mix)


@pytest.mark.e2e
def test_twice_the_capacity_fills_the_queue(report):
    overload = report.scenario("overload")
    assert overload.clients == 2 * (2 + 2)
    assert overload.statuses[200] >= 1 and overload.statuses[503] >= 1
    # Every 503 came with Retry-After (else it would be a problem, and a failure above).
    assert not [o for o in overload.outcomes if o.problem]


@pytest.mark.e2e
def test_head_answers_headers_only(report):
    heads = report.scenario("head").outcomes
    assert {o.probe.kind for o in heads if o.status == 200} == {"head page", "head episode",
                                                                 "head stream"}
    assert not [o for o in heads if o.problem]


@pytest.mark.e2e
def test_streams_left_midway_free_their_slots(report):
    left = report.left
    assert left.left >= 1
    # Run on, each would write up to 1000 tokens; cancelled at the turn after
    # its client left, it writes a few (a turn writes one to five).
    assert left.tokens_generated < 0.5 * left.tokens_asked, left
    assert left.idle_after is not None and left.idle_after < 5, left


@pytest.mark.e2e
def test_slowloris_connections_stop_no_one(report):
    assert report.slowloris.most_open == SIZES.slowloris
    # Meanwhile every scenario was answered (above) and so was every /healthz.
    assert report.health and {h.status for h in report.health} == {200}
    assert len(report.health) >= 10


@pytest.mark.e2e
def test_floods_of_long_prefixes_are_answered_or_refused(report):
    flood = report.scenario("flood").statuses
    assert set(flood) <= {200, 400, 503} and flood[400] >= 1


@pytest.mark.e2e
def test_oversized_heads_are_a_4xx(report):
    for outcome in report.scenario("headers").outcomes:
        if outcome.probe.kind == "oversized head":
            assert outcome.status in (400, 431), outcome
        else:  # within nginx's buffers: the app never sees the headers it does not read
            assert outcome.status == 200, outcome


def test_the_answer_rules_catch_what_they_should():
    """The soak's checker itself: a 500, a 503 without Retry-After, an HTML
    refusal, an unsafe JSONP body and a HEAD with a body are each caught."""
    episode = Probe("generate", "/?length=2", frozenset({200, 503}))
    jsonp = Probe("jsonp", "/?callback=cb", frozenset({200, 503}))
    refused = Probe("wrong type", "/?length=x", frozenset({400}))
    head = Probe("head stream", "/stream?length=2", frozenset({200, 503}), "HEAD")
    json_503 = b'{"error": "busy", "status": 503}'
    assert problem_with(episode, 500, {}, b'{"error": "x", "status": 500}')
    assert problem_with(episode, 503, {}, json_503)
    assert problem_with(episode, 503, {"Retry-After": "2"}, json_503) is None
    assert problem_with(refused, 400, {}, b"<html>Bad Request</html>")
    assert problem_with(refused, 200, {}, b'{"text": "", "tokens": 0}')
    assert problem_with(jsonp, 200, {}, b"alert(1)//({});\n")
    assert problem_with(jsonp, 200, {}, b'/**/cb({"sample_text": "a"});\n') is None
    assert problem_with(refused, 429, {"Retry-After": "1"},
                        b'{"error": "slow down", "status": 429}') is None
    event_stream = {"Content-Type": "text/event-stream; charset=utf-8"}
    assert problem_with(head, 200, event_stream, b"") is None
    assert problem_with(head, 200, event_stream, b"event: piece\n")
    assert problem_with(head, 200, {"Content-Type": "text/html"}, b"")
    assert problem_with(head, 503, {"Retry-After": "1", "Content-Type": "application/json"},
                        b"") is None
