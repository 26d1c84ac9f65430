"""The real service for end-to-end tests: a tiny checkpoint made by
scratch_model, then scripts/serve.sh (uWSGI + nginx) on a free 127.0.0.1 port."""
from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir(prefix: str) -> str:
    """A folder under /tmp, removed at exit: unix socket paths must stay short."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def tiny_checkpoint_dir() -> str:
    """A checkpoint folder holding run1: a freshly initialised tiny model, made
    once per test session."""
    checkpoint_dir = short_temp_dir("pokegen-ckpt-")
    subprocess.run([sys.executable, "-c",
                    "import sys, scratch_model; scratch_model.create_model_dir(sys.argv[1], 'tiny')",
                    os.path.join(checkpoint_dir, "run1")],
                   cwd=ROOT, check=True, capture_output=True)
    return checkpoint_dir


class ServiceStack:
    """`make serve`'s script with test settings; stopped with SIGTERM like a user's Ctrl-C."""

    def __init__(self, **settings):
        self.port = free_port()
        self.run_dir = short_temp_dir("pokegen-run-")
        self.log_path = os.path.join(self.run_dir, "serve.log")
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CHECKPOINT_DIR": tiny_checkpoint_dir(),
            "RUN_NAME": "run1",
            "PORT": str(self.port),
            "BIND_ADDRESS": "127.0.0.1",
            "RUN_DIR": self.run_dir,
            "VIRTUAL_ENV": sys.prefix,
            **{name: str(value) for name, value in settings.items()},
        }
        self.process = None

    def start(self, timeout: float = 300.0) -> "ServiceStack":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([os.path.join(ROOT, "scripts", "serve.sh")],
                                            cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()  # never leave servers behind a failed start
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve.sh exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or busy loading
            time.sleep(0.3)
        raise RuntimeError(f"the service was not ready after {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # The script's own group: its uWSGI and nginx go with it.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode if self.process else 0

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return requests.get(self.url + path, **kwargs)

    def metric(self, name: str) -> float:
        """The value of one unlabelled sample of /metrics."""
        text = self.get("/metrics").text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))


def wait_until_listening(url: str, process: subprocess.Popen, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening at {url}")


def read_events(response: requests.Response):
    """Yields (event, data) pairs of a text/event-stream response as they arrive."""
    import json
    event = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: "):])
