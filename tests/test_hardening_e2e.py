"""nginx's hardening, for real: the per-client rate limit (paced, then a JSON
429 with Retry-After), a small body limit, timeouts that let the app answer
first and drop slow clients, no version in Server, the page's security
headers, and JSONP only for safe names. Every request goes through nginx."""
import json
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import pytest
import requests

from nginx_alone import nginx_alone
from pokegen.service_stack import short_temp_dir

pytestmark = pytest.mark.e2e

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
CHEAP = "/?length=0"  # refused by the app's validation: exercises the limit, not the model
REQUEST_TIMEOUT = 120
# The defaults of scripts/render-nginx-config.sh, which this stack keeps.
RATE_LIMIT, RATE_BURST = 10, 40


@pytest.fixture(scope="module")
def stack(start_stack):
    # The rate limit is tested here with floods of a hundred requests at once:
    # the cap on open connections (test_nginx_fairness.py) is opened up.
    return start_stack(GENERATION_CONCURRENCY=2, QUEUE_SIZE=4, CONNECTION_LIMIT=1000,
                       REQUEST_TIMEOUT=REQUEST_TIMEOUT)


def let_the_limit_drain():
    """The bucket of 127.0.0.1 empties at RATE_LIMIT a second."""
    time.sleep(RATE_BURST / RATE_LIMIT + 0.5)


# ------------------------------------------------------------------ headers

class ScriptsAndHandlers(HTMLParser):
    """Collects <script> elements and inline event-handler attributes."""

    def __init__(self):
        super().__init__()
        self.scripts, self.handlers, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.handlers += [name for name in attrs if name.startswith("on")]
        if tag == "script":
            self.scripts.append({"src": attrs.get("src"), "body": ""})
            self._in_script = True

    def handle_endtag(self, tag):
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1]["body"] += data


def test_the_page_carries_security_headers_and_no_inline_script(stack):
    page = stack.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1)
                  for part in page.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Frame-Options"] == "DENY"
    parsed = ScriptsAndHandlers()
    parsed.feed(page.text)
    # The policy would block inline script anyway; the page must not need any.
    assert parsed.scripts and all(s["src"] and not s["body"].strip() for s in parsed.scripts)
    assert parsed.handlers == []


def test_no_answer_names_the_server_version(stack):
    answers = [stack.get("/", headers={"Accept": BROWSER_ACCEPT}),
               stack.get("/static/app.js"), stack.get("/healthz"), stack.get("/no/such/path"),
               stack.get("/?length=0"), stack.get("/?prefix=" + "a" * 20_000)]
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 400, 414]
    for answer in answers:
        assert answer.headers["Server"] == "nginx", answer.headers
        assert "nginx/" not in answer.text


def test_api_answers_are_not_sniffed(stack):
    for answer in (stack.get("/?length=2"), stack.get("/?length=0"),
                   stack.get("/static/app.js")):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


# ------------------------------------------------------------ header sizes

def raw_request(port: int, target: str, headers: list, host: str = "127.0.0.1") -> tuple:
    """Sends a GET as it is (requests would refuse some of these) and returns
    the status and the body of the answer."""
    head = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers) + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head.encode("latin-1"))
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# Requests whose line and headers nginx takes (each within a 16 kB buffer) but
# which, passed on whole, are more than uWSGI's 64 kB packet: a 500 before.
BIG_HEADS = {
    "a 16 kB line and three 15 kB headers": (16_000, [(f"X-Pad-{i}", "b" * 15_000)
                                                      for i in range(3)]),
    "a 16 kB line and 400 headers of 100 bytes": (16_000, [(f"X-{i}", "c" * 100)
                                                           for i in range(400)]),
}


@pytest.mark.parametrize("case", sorted(BIG_HEADS))
def test_big_request_heads_never_get_a_5xx(stack, case):
    let_the_limit_drain()
    line, headers = BIG_HEADS[case]
    status, body = raw_request(stack.port, "/healthz?pad=" + "a" * line, headers)
    # Headers the app does not read never reach it: the probe answers as usual.
    assert status == 200, (status, body[:200])


def test_an_oversized_header_the_app_reads_is_a_json_431(stack):
    let_the_limit_drain()
    for headers, host in [([("Accept", "application/json;q=0.9, " * 500)], "127.0.0.1"),
                          ([], "h" * 300 + ".example")]:
        status, body = raw_request(stack.port, "/?length=1", headers, host=host)
        assert status == 431, (status, body[:200])
        assert json.loads(body)["status"] == 431


def test_the_app_still_reads_the_accept_header(stack):
    # Not the browser's usual order, so nginx passes it on; the app itself
    # then finds HTML preferred and answers with the page, not an episode.
    page = stack.get("/", headers={"Accept": "application/json;q=0.5, text/html"})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")


# -------------------------------------------------------------------- JSONP

@pytest.mark.parametrize("callback", [
    "alert(1)", "alert(document.cookie)//", "<script>alert(1)</script>", "a;alert(1)",
    "x\nalert(1)", "x\u2028y", "\uff41lert", "constructor['x']", "a b", "a-b", "1a", "",
    "a" * 65, "window.location='//x'", "x)//",
])
def test_jsonp_refuses_every_unsafe_callback(stack, callback):
    answer = stack.get("/", params={"callback": callback, "length": 2})
    assert answer.status_code == 400, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["parameter"] == "callback"
    if callback:
        assert callback not in answer.text  # the refusal never echoes it back


def test_jsonp_for_a_safe_name_is_script_with_json_inside(stack):
    answer = stack.get("/", params={"callback": "jQuery_1.done$", "prefix": "Ash\u2028",
                                    "length": 3, "seed": 5})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    match = re.fullmatch(r"/\*\*/jQuery_1\.done\$\((.*)\);\n", answer.text, re.S)
    assert match, answer.text
    assert answer.text.isascii()  # U+2028 stays escaped inside the script
    assert json.loads(match.group(1))["prefix"] == "Ash\u2028"


# ------------------------------------------------------- body and timeouts

def test_a_request_body_over_its_cap_is_a_json_413(stack):
    # 16 kB of JSON on the generation routes, 1 kB elsewhere.
    for path, size in (("/", 16385), ("/stream", 16385), ("/healthz", 4096)):
        answer = requests.post(stack.url + path, data=b"x" * size, timeout=30,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 413, path
        assert answer.json()["status"] == 413 and "16 kB" in answer.json()["error"]
    answer = requests.post(stack.url + "/v1/completions", data=b"x" * 16385, timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["message"]
    # A body of exactly 16 kB reaches the app, which reads it whole.
    just_fits = ('{"prefix": "' + "a" * (16384 - 14) + '"}').encode()
    answer = requests.post(stack.url + "/", data=just_fits, timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["parameter"] == "prefix"
    assert "at most 1000 characters, got 16370" in answer.json()["error"]


def test_nginx_waits_longer_than_the_app_for_every_generation(stack):
    with open(os.path.join(stack.run_dir, "nginx", "pokegen.conf")) as f:
        conf = f.read()
    app_locations = re.findall(r"location (?:= /|= /stream|/v1/|/) \{(.*?)\n    \}", conf,
                               re.S)
    assert len(app_locations) == 4
    for block in app_locations:
        upstream = int(re.search(r"uwsgi_read_timeout (\d+)s;", block).group(1))
        assert upstream > REQUEST_TIMEOUT
    assert stack.get("/info").json()["limits"]["request_timeout"] == REQUEST_TIMEOUT


def test_a_silent_app_server_gets_a_json_504_not_a_hang():
    socket_path = os.path.join(short_temp_dir("pokegen-silent-"), "silent.sock")
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(socket_path)
    silent.listen(8)  # accepts, never answers
    held = []
    threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()
    try:
        with nginx_alone(socket_path, REQUEST_TIMEOUT=1, UPSTREAM_MARGIN=1) as url:
            started = time.monotonic()
            answer = requests.get(url + "/?prefix=Ash", timeout=30)
            waited = time.monotonic() - started
    finally:
        silent.close()
    assert answer.status_code == 504 and answer.json()["status"] == 504
    assert 1.5 < waited < 10, waited


def test_a_client_that_trickles_its_request_is_dropped(stack):
    """A slow client cannot hold a connection: nginx closes it after
    client_header_timeout (10 s)."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as conn:
        conn.sendall(b"GET /?prefix=Ash HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        started = time.monotonic()
        try:
            leftover = conn.recv(4096)
        except ConnectionResetError:
            leftover = b""
        closed_after = time.monotonic() - started
    assert closed_after < 20, closed_after
    assert leftover == b"" or leftover.startswith(b"HTTP/1.1 408")


# --------------------------------------------------------------- rate limit

def test_a_flood_from_one_address_gets_json_429s_with_retry_after(stack):
    let_the_limit_drain()
    flood = 100
    barrier = threading.Barrier(flood)

    def one_request(_):
        barrier.wait()
        return requests.get(stack.url + CHEAP, timeout=60)

    with ThreadPoolExecutor(flood) as pool:
        answers = list(pool.map(one_request, range(flood)))
    statuses = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 429]
    # One request plus the burst pass (more as the bucket drains meanwhile); the rest are refused.
    assert set(statuses) == {400, 429}, statuses
    assert statuses.count(400) >= RATE_BURST + 1 and len(refused) >= 10, statuses
    for answer in refused:
        assert answer.headers["Retry-After"] == "1"
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json() == {"error": "too many requests from this address: slow down",
                                 "status": 429, "retry_after": 1}
    # While this address is over its limit, the page and its files still load.
    assert stack.get("/", headers={"Accept": BROWSER_ACCEPT}).status_code == 200
    assert stack.get("/static/style.css").status_code == 200


def test_a_client_that_waits_for_each_answer_is_paced_never_refused(stack):
    let_the_limit_drain()
    count = RATE_BURST // 2 + 20  # past the burst taken at once: the rest are paced
    started = time.monotonic()
    statuses = [stack.get(CHEAP).status_code for _ in range(count)]
    took = time.monotonic() - started
    assert statuses == [400] * count
    # The requests past the first burst went at about RATE_LIMIT a second.
    assert took >= (count - RATE_BURST // 2 - 1) / RATE_LIMIT * 0.8, took
