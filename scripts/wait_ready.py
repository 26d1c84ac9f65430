"""Waits until the service's /readyz answers 200, then prints how long the
start took. Exits 0 when ready; 2 when the model failed to load (its error is
printed: the service stays up and answers 503 with it); 1 when a watched
server ended or time ran out.

Usage: python scripts/wait_ready.py URL [--since SECONDS] [--watch-pid PID ...]
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def readiness(url: str) -> tuple[str, str]:
    """('ready' | 'failed' | 'waiting', detail) for one look at /readyz."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return "ready", ""
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read() or b"{}")
        except ValueError:
            body = {}
        if body.get("state") == "failed":
            return "failed", body.get("error", "the model failed to load")
        return "waiting", ""
    except OSError:  # not listening yet
        return "waiting", ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def wait_ready(url: str, since: float, watch_pids: list[int], timeout: float) -> int:
    start = time.monotonic() - since
    while time.monotonic() - start < timeout:
        state, detail = readiness(url)
        if state == "ready":
            print(f"pokegen is ready: {time.monotonic() - start:.1f} s after start", flush=True)
            return 0
        if state == "failed":
            print(f"error: {detail}", file=sys.stderr, flush=True)
            return 2
        if not all(alive(pid) for pid in watch_pids):
            return 1  # the server that stopped says why on its own
        time.sleep(0.5)
    print(f"error: not ready after {timeout:.0f} s ({url})", file=sys.stderr, flush=True)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the /readyz address")
    parser.add_argument("--since", type=float, default=0.0,
                        help="seconds already spent starting, added to the figure printed")
    parser.add_argument("--watch-pid", type=int, action="append", default=[],
                        help="give up when this process ends (repeatable)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait at most")
    args = parser.parse_args()
    try:
        return wait_ready(args.url, args.since, args.watch_pid, args.timeout)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
