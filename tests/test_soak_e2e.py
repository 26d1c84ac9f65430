"""A short soak (benchmarks/soak.py, 150 requests at 16 concurrent) of the
real stack with the service's default cap and queue: every request is
answered in time, no 5xx but the intended 503 with Retry-After, every
refusal a JSON reason, memory flat after the warm-up.
The full soak is `make soak`; its figures are in docs/reliability.md."""
import pytest

from benchmarks.soak import format_report, run_soak, stack_rss
from benchmarks.soak_requests import Probe, problem_with


@pytest.fixture(scope="module")
def stack(start_stack):
    # One client address stands for sixteen users: the per-client limits
    # (tested on their own) are opened up, as `make soak` does.
    return start_stack(GENERATION_CONCURRENCY=3, QUEUE_SIZE=16, RATE_LIMIT=1000,
                       RATE_BURST=2000, CONNECTION_LIMIT=1000,
                       CLIENT_GENERATION_LIMIT=1000)


@pytest.mark.e2e
def test_a_short_soak_keeps_every_rule(stack):
    report = run_soak(stack.url, stack_rss(stack.server_processes), requests=150,
                      concurrency=16, warmup=60, deadline=60, time_limit=600, seed=7)
    print(format_report(report, "python benchmarks/soak.py --requests 150 --warmup 60"))
    assert report.failures() == []
    assert sum(report.statuses.values()) == 150
    # The mix reached the model, the validation and nginx's own refusals.
    assert report.statuses[200] > 30 and report.statuses[400] > 20
    assert {404, 405, 413, 414} & set(report.statuses)
    assert not {s for s in report.statuses if s != "no answer" and s >= 500} - {503}
    assert abs(report.rss_change) <= 0.05, report.rss_change
    assert "Traceback" not in stack.log(tail=200_000)


def test_the_answer_rules_catch_what_they_should():
    """The soak's checker itself: a 500, a 503 without Retry-After, an HTML
    refusal and an unsafe JSONP body are each caught."""
    episode = Probe("generate", "/?length=2", frozenset({200, 503}))
    jsonp = Probe("jsonp", "/?callback=cb", frozenset({200, 503}))
    refused = Probe("wrong type", "/?length=x", frozenset({400}))
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
