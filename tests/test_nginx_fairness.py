"""nginx's share of fairness, for real: nginx with the project's rendered
configuration in front of real uWSGI running a stand-in app (echo_wsgi.py),
so that what nginx lets through, and with which client address, is seen
exactly.

- One address may hold at most CONNECTION_LIMIT requests open; beyond, JSON 429.
- X-Forwarded-For names the client only from TRUSTED_PROXIES (none by default).
- /healthz and /readyz are never limited.
- /metrics and /info answer only INTERNAL_ADDRESSES (127.0.0.1 by default).
"""
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from nginx_alone import hold_many, nginx_alone
from pokegen.service_stack import short_temp_dir

pytestmark = pytest.mark.e2e

# Documentation addresses (RFC 5737): clients behind a trusted proxy, as strings in a header.
CLIENT_A, CLIENT_B = "203.0.113.10", "198.51.100.20"


def test_one_address_holds_at_most_connection_limit_requests(echo_socket):
    with nginx_alone(echo_socket, CONNECTION_LIMIT=3, RATE_LIMIT=1000, RATE_BURST=1000) as url:
        answers = hold_many(url + "/", 8, hold=1.5)
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * 3 + [429] * 5, statuses
        for refused in (a for a in answers if a.status_code == 429):
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["status"] == 429 and refused.json()["error"]
        # Once those ended, the address may open as many again.
        assert [a.status_code for a in hold_many(url + "/stream", 3, hold=0.2)] == [200] * 3


def test_probes_are_never_limited(echo_socket):
    with nginx_alone(echo_socket, CONNECTION_LIMIT=1, RATE_LIMIT=1, RATE_BURST=1) as url:
        # The address is over both limits: a request held open, and a burst spent.
        holder = threading.Thread(target=requests.get, args=(url + "/?hold=3",),
                                  kwargs={"timeout": 30})
        holder.start()
        time.sleep(0.5)
        assert requests.get(url + "/?prefix=x", timeout=10).status_code == 429
        probes = [requests.get(url + path, timeout=10) for path in ("/healthz", "/readyz") * 10]
        holder.join()
        assert [p.status_code for p in probes] == [200] * 20
        assert {p.json()["path"] for p in probes} == {"/healthz", "/readyz"}


def test_internal_endpoints_answer_only_internal_addresses(echo_socket):
    with nginx_alone(echo_socket) as url:  # the default list: this host
        for path in ("/metrics", "/info"):
            assert requests.get(url + path, timeout=10).status_code == 200
    with nginx_alone(echo_socket, INTERNAL_ADDRESSES="203.0.113.0/24") as url:
        for path in ("/metrics", "/info"):
            refused = requests.get(url + path, timeout=10)
            assert refused.status_code == 403, path
            assert refused.headers["Content-Type"] == "application/json"
            assert refused.json() == {"error": "forbidden: this path is for internal "
                                               "addresses only", "status": 403}
        # Everything else stays public.
        assert requests.get(url + "/?prefix=x", timeout=10).status_code == 200
        assert requests.get(url + "/healthz", timeout=10).status_code == 200


def test_forwarded_addresses_count_only_from_trusted_proxies(echo_socket):
    forwarded_a = {"X-Forwarded-For": CLIENT_A}
    with nginx_alone(echo_socket) as url:  # no trusted proxy: the header is ignored
        assert requests.get(url + "/", headers=forwarded_a, timeout=10).json()["remote_addr"] \
            == "127.0.0.1"
    with nginx_alone(echo_socket, TRUSTED_PROXIES="127.0.0.1", CONNECTION_LIMIT=2,
                     RATE_LIMIT=1000, RATE_BURST=1000,
                     INTERNAL_ADDRESSES="127.0.0.1 203.0.113.0/24") as url:
        # The app sees the client, not the proxy.
        echoed = requests.get(url + "/", headers={"X-Forwarded-For": f"{CLIENT_B}, {CLIENT_A}"},
                              timeout=10).json()
        assert echoed["remote_addr"] == CLIENT_A
        # Each client has its own limits: A over its connections does not refuse B.
        with ThreadPoolExecutor(2) as pool:
            flood_a = pool.submit(hold_many, url + "/", 5, 1.5, forwarded_a)
            time.sleep(0.5)
            b = requests.get(url + "/", headers={"X-Forwarded-For": CLIENT_B}, timeout=10)
            statuses_a = sorted(a.status_code for a in flood_a.result())
        assert b.status_code == 200 and b.json()["remote_addr"] == CLIENT_B
        assert statuses_a == [200] * 2 + [429] * 3, statuses_a
        # The allow-list applies to the client's address too.
        assert requests.get(url + "/metrics", headers=forwarded_a, timeout=10).status_code == 200
        assert requests.get(url + "/metrics", headers={"X-Forwarded-For": CLIENT_B},
                            timeout=10).status_code == 403


def test_a_bad_address_list_is_a_one_line_error():
    from pokegen.service_stack import ROOT
    for name in ("TRUSTED_PROXIES", "INTERNAL_ADDRESSES"):
        rendered = subprocess.run([os.path.join(ROOT, "scripts", "render-nginx-config.sh")],
                                  env={**os.environ, "RUN_DIR": short_temp_dir("pokegen-bad-"),
                                       name: "203.0.113.1 not-an-address"},
                                  capture_output=True, text=True)
        assert rendered.returncode == 1
        assert rendered.stderr == (f"error: {name} must list IP addresses or CIDR ranges, "
                                   f"got 'not-an-address'\n")
