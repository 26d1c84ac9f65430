"""The real service on this machine, for the tests, the benchmarks and the page's screenshots:
scripts/serve.sh (uWSGI + nginx, as `make serve` runs them) on a free 127.0.0.1 port, by
default on a tiny new model built once per process; and the small waits they all need."""
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

# The checkout this package runs from: the stack is its scripts/serve.sh.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
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
    """A checkpoint folder holding run1: a freshly initialised tiny model, made once per
    process (in a child process, which keeps TensorFlow out of this one)."""
    checkpoint_dir = short_temp_dir("pokegen-ckpt-")
    subprocess.run([sys.executable, "-m", "pokegen.new_model", os.path.join(checkpoint_dir, "run1"),
                    "--preset", "tiny"], cwd=ROOT, check=True, capture_output=True)
    return checkpoint_dir


class ServiceStack:
    """`make serve`'s script with test settings; stopped with SIGTERM like a user's Ctrl-C.
    The settings are its environment; without CHECKPOINT_DIR it serves the tiny new model."""

    def __init__(self, **settings):
        self.port = free_port()
        self.run_dir = short_temp_dir("pokegen-run-")
        self.log_path = os.path.join(self.run_dir, "serve.log")
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CHECKPOINT_DIR": settings.get("CHECKPOINT_DIR") or tiny_checkpoint_dir(),
            "RUN_NAME": "run1",
            "PORT": str(self.port),
            "BIND_ADDRESS": "127.0.0.1",
            "RUN_DIR": self.run_dir,
            "VIRTUAL_ENV": sys.prefix,
            **{name: str(value) for name, value in settings.items()},
        }
        self.process = None

    def start(self, timeout: float = 300.0, until: str = "ready") -> "ServiceStack":
        """Starts serve.sh and waits until /readyz reports `until`: "ready", or
        "failed" for a model that cannot load (the stack then stays up)."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([os.path.join(ROOT, "scripts", "serve.sh")],
                                            cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        try:
            self._wait_until(until, timeout)
        except BaseException:
            self.stop()  # never leave servers behind a failed start
            raise
        return self

    def _wait_until(self, until: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve.sh exited with {self.process.returncode}:\n{self.log()}")
            try:
                readyz = requests.get(self.url + "/readyz", timeout=5)
                state = "ready" if readyz.status_code == 200 else _json(readyz).get("state")
            except (requests.ConnectionError, requests.Timeout):
                state = None  # not listening yet, or busy loading
            if state == until:
                return
            if state in ("ready", "failed"):  # settled, but not as expected
                raise RuntimeError(f"the model is {state}, not {until}:\n{self.log()}")
            time.sleep(0.3)
        raise RuntimeError(f"the service was not {until} after {timeout:.0f} s:\n{self.log()}")

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

    def log(self, tail: int = 4000) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-tail:]

    def server_processes(self) -> list:
        """uWSGI's master and workers and nginx's master and workers, as
        psutil processes."""
        import psutil
        children = psutil.Process(self.process.pid).children(recursive=True)
        return [p for p in children if _name(p) in ("uwsgi", "nginx")]

    def uwsgi_worker(self):
        """The uWSGI worker: the uwsgi process whose parent is uwsgi (the master)."""
        for process in self.server_processes():
            parent = process.parent()
            if _name(process) == "uwsgi" and parent is not None and _name(parent) == "uwsgi":
                return process
        raise AssertionError("no uWSGI worker is running")

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return requests.get(self.url + path, **kwargs)

    def metric(self, name: str) -> float:
        """The value of one unlabelled sample of /metrics."""
        text = self.get("/metrics").text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))


def _name(process) -> str:
    import psutil
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


def _json(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """True as soon as condition() is; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False
