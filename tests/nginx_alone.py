"""nginx on its own, with the project's rendered configuration, in front of whatever listens
on a socket (a stand-in app, or nothing); and requests held open through it."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from pokegen.service_stack import ROOT, free_port, short_temp_dir, wait_for

RENDER = os.path.join(ROOT, "scripts", "render-nginx-config.sh")


@contextlib.contextmanager
def nginx_alone(socket_path: str, **settings):
    """nginx in front of `socket_path` (whatever listens there, or nothing); yields its URL."""
    run_dir = short_temp_dir("pokegen-nginx-")
    port = free_port()
    env = {**os.environ, "RUN_DIR": run_dir, "PORT": str(port), "BIND_ADDRESS": "127.0.0.1",
           "POKEGEN_SOCKET": socket_path, **{k: str(v) for k, v in settings.items()}}
    conf = subprocess.run([RENDER], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()
    nginx = subprocess.Popen(["nginx", "-p", run_dir, "-c", conf, "-e", "stderr",
                              "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(url + "/static/style.css", nginx)
        yield url
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


def wait_until_listening(url: str, process: subprocess.Popen, timeout: float = 30.0):
    """The first answer from url, asked until the server that process runs listens."""
    answers = []

    def answered() -> bool:
        assert process.poll() is None, "the server exited"
        try:
            answers.append(requests.get(url, timeout=2))
        except requests.ConnectionError:
            return False
        return True

    assert wait_for(answered, timeout, interval=0.1), f"nothing listening at {url}"
    return answers[0]


def rendered_upstream_timeouts(**settings) -> set:
    """The uwsgi_read_timeout values of the app's locations in the nginx
    configuration that scripts/render-nginx-config.sh renders for `settings`
    (and nothing else from the environment)."""
    env = {"PATH": os.environ["PATH"], "RUN_DIR": short_temp_dir("pokegen-render-"),
           **{k: str(v) for k, v in settings.items()}}
    subprocess.run([RENDER], env=env, check=True, capture_output=True, text=True)
    with open(os.path.join(env["RUN_DIR"], "pokegen.conf"), encoding="utf-8") as f:
        timeouts = re.findall(r"uwsgi_read_timeout (\d+)s;", f.read())
    # The probes and /metrics keep their own short timeout; the rest wait for generations.
    return {int(t) for t in timeouts if t != "30"}


def hold_many(url: str, count: int, hold: float, headers=None) -> list:
    """`count` requests sent at once, each held open `hold` seconds by the stand-in app
    (echo_wsgi.py)."""
    barrier = threading.Barrier(count)

    def one(_):
        barrier.wait()
        return requests.get(url + f"?hold={hold}", headers=headers or {}, timeout=60)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))
