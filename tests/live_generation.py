"""Watching generations while they run on a real stack: turns slowed or held through the
engine's fault settings (app/engine/faults.py), and a stream's events as they arrive."""
from __future__ import annotations

import contextlib
import json
import os

import requests

from benchmarks.speed_client import event_stream_lines
from pokegen.service_stack import wait_for

# Every decoding turn slowed a little, so that a long generation is still running when a test
# looks at it, however fast the CPU writes the tiny test model's tokens.
SLOW_TURNS = {"POKEGEN_FAULT_TURN_DELAY": 0.003}


class FrozenLoop:
    """The engine's decoding loop held at the start of its next turn, through the
    fault-injection file of app/engine/faults.py, until the block ends. Entering
    returns once the loop says it is held, however fast or slow this machine is."""

    def __init__(self, path: str, timeout: float = 30.0):
        self.path, self.timeout = path, timeout

    def __enter__(self):
        from app.engine.faults import FROZEN_SUFFIX

        marker = self.path + FROZEN_SUFFIX
        with contextlib.suppress(FileNotFoundError):
            os.remove(marker)  # left by a worker killed while held
        open(self.path, "w").close()
        if not wait_for(lambda: os.path.exists(marker), timeout=self.timeout):
            self.__exit__()
            raise AssertionError(f"the decoding loop did not stop within {self.timeout} s")
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


def read_events(response: requests.Response):
    """Yields (event, data) pairs of a text/event-stream response as they arrive."""
    event = None
    for line in event_stream_lines(response):
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: "):])
