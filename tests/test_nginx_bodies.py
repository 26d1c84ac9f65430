"""nginx in front of POST bodies and the OpenAI-compatible /v1/ routes, for
real: the project's rendered configuration before real uWSGI running a
stand-in app (echo_wsgi.py). Bodies of up to 16 kB reach the generation
routes, bigger ones are nginx's JSON 413 (OpenAI's error shape on /v1/), other
routes keep their 1 kB; /v1/ has the limits of / and /stream and streams
unbuffered."""
import time

import pytest
import requests

from nginx_alone import hold_many, nginx_alone

pytestmark = pytest.mark.e2e

BODY_ROUTES = ("/", "/stream", "/v1/completions")


def json_of(size: int) -> str:
    """A JSON document of exactly `size` bytes."""
    return '{"prefix": "' + "a" * (size - 14) + '"}'


@pytest.fixture(scope="module")
def url(echo_socket):
    with nginx_alone(echo_socket, CONNECTION_LIMIT=3, RATE_LIMIT=1000, RATE_BURST=1000) as url:
        yield url


def post(url, body, **kwargs):
    return requests.post(url, data=body.encode(), timeout=30,
                         headers={"Content-Type": "application/json"}, **kwargs)


def test_bodies_of_16_kB_reach_the_generation_routes(url):
    for path in BODY_ROUTES:
        answer = post(url + path, json_of(16384))
        assert answer.status_code == 200, path
        assert answer.json() == {"method": "POST", "path": path, "remote_addr": "127.0.0.1",
                                 "body_bytes": 16384}


def test_a_bigger_body_is_nginxs_json_413(url):
    for path in ("/", "/stream"):
        refused = post(url + path, json_of(16385))
        assert refused.status_code == 413, path
        assert refused.headers["Content-Type"] == "application/json"
        assert refused.json()["status"] == 413 and "16 kB" in refused.json()["error"]
    refused = post(url + "/v1/completions", json_of(16385))
    assert refused.status_code == 413
    assert refused.json() == {"error": {"message": "the body must be at most 16384 bytes",
                                        "type": "invalid_request_error", "param": None,
                                        "code": None}}


def test_other_routes_keep_their_1_kB_cap(url):
    for path in ("/healthz", "/readyz", "/metrics", "/info"):
        assert post(url + path, json_of(1024)).status_code == 200, path
        assert post(url + path, json_of(2048)).status_code == 413, path


def test_v1_shares_the_connection_limit_and_refuses_in_openais_shape(url):
    answers = hold_many(url + "/v1/completions", 6, hold=1.5)
    assert sorted(a.status_code for a in answers) == [200] * 3 + [429] * 3
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("path", ["/stream", "/v1/completions"])
def test_streams_pass_through_unbuffered(url, path):
    with requests.post(url + path + "?trickle=6", json={}, stream=True, timeout=30) as answer:
        lines = answer.iter_lines()
        first = next(line for line in lines if line)
        arrived = time.time()
        # Sent at its time; the app is still writing the other five.
        assert arrived - float(first.split()[-1]) < 1.0
        assert len([line for line in lines if line]) == 5
