"""The app container's preStop hook in Kubernetes: waits until this replica holds no request.

When a pod stops, its nginx first waits for the Service to stop sending it new requests, then
finishes the ones it holds; they are being generated here. So the app must keep running until it
holds none: this waits at least --settle seconds, then until /metrics shows no generation in
flight and none queued on two readings in a row (or the socket is gone). uWSGI then gets SIGTERM
with nothing left to cut. The pod's terminationGracePeriodSeconds bounds the whole wait.

Usage: python3 uwsgi_drain.py [SOCKET] [--settle 15] [--interval 1]
"""
import argparse
import re
import sys
import time

from uwsgi_readyz import default_socket, response

HELD = ("pokegen_generations_in_flight", "pokegen_queue_depth")


def requests_held(metrics: str) -> float:
    """Generations in flight plus those queued, from a Prometheus exposition."""
    total = 0.0
    for name in HELD:
        match = re.search(rf"^{name} (\S+)$", metrics, re.M)
        if match is None:
            raise ValueError(f"{name} is missing from /metrics")
        value = float(match.group(1))
        total += 0.0 if value != value else value  # NaN: the model is not loaded, nothing held
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", nargs="?", default=default_socket(), help="uWSGI's unix socket")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds to wait first, while nginx stops getting new requests")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    args = parser.parse_args()
    time.sleep(args.settle)
    idle_readings = 0
    while idle_readings < 2:
        try:
            body = response(args.socket, "/metrics", timeout=5.0).decode("utf-8", "replace")
            idle_readings = idle_readings + 1 if requests_held(body) == 0 else 0
        except (OSError, ValueError) as error:
            print(f"drain: {error}: stopping now")
            return 0
        time.sleep(args.interval)
    print("drain: no request held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
