"""How long the service is out after its uWSGI worker is killed (SIGKILL, as
the kernel's OOM killer would): starts the real stack (scripts/serve.sh on
127.0.0.1), holds a few generations in flight, kills the worker, and prints
what the held requests got and how long until an episode is answered again
(the master respawns the worker, which loads the model again).

    python benchmarks/worker_recovery.py                       # a fresh tiny model
    python benchmarks/worker_recovery.py --checkpoint-dir build/bench/gpt2-small
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status_of(url: str, timeout: float) -> str:
    try:
        return str(requests.get(url, timeout=timeout).status_code)
    except requests.RequestException as error:
        return type(error).__name__


def measure(stack, held: int, length: int, limit: float) -> dict:
    """Kills the worker while `held` generations run; seconds until a 200."""
    from pokegen.service_stack import wait_for

    worker = stack.uwsgi_worker()
    with ThreadPoolExecutor(held) as pool:
        answers = [pool.submit(status_of, f"{stack.url}/?length={length}&truncate=0&seed={i}",
                               limit) for i in range(held)]
        if not wait_for(lambda: stack.metric("pokegen_generations_in_flight") >= 1, 60):
            raise RuntimeError("no generation was in flight")
        killed_at = time.monotonic()
        worker.send_signal(signal.SIGKILL)
        back = wait_for(lambda: status_of(stack.url + "/?length=2", 30) == "200",
                        timeout=limit, interval=0.25)
        recovered = time.monotonic() - killed_at if back else None
        statuses = [a.result() for a in answers]
    return {"held": statuses, "recovered": recovered, "old_pid": worker.pid,
            "new_pid": stack.uwsgi_worker().pid}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", help="serve run1 from here (default: a fresh tiny "
                                                 "model)")
    parser.add_argument("--held", type=int, default=3, help="generations in flight (3)")
    parser.add_argument("--length", type=int, default=256, help="their length (256)")
    parser.add_argument("--limit", type=float, default=600.0,
                        help="seconds to wait for the service to answer again (600)")
    args = parser.parse_args()
    from pokegen.service_stack import ServiceStack

    settings = {"CHECKPOINT_DIR": os.path.abspath(args.checkpoint_dir)} if args.checkpoint_dir \
        else {}
    started = time.monotonic()
    try:
        # Every held request comes from 127.0.0.1: the per-client limits are opened up.
        stack = ServiceStack(GENERATION_CONCURRENCY=3, CONNECTION_LIMIT=1000,
                             CLIENT_GENERATION_LIMIT=1000, **settings).start(timeout=args.limit)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    first_start = time.monotonic() - started
    try:
        result = measure(stack, args.held, args.length, args.limit)
    finally:
        stack.stop()
    print(f"first start (serve.sh to ready): {first_start:.1f} s")
    print(f"worker {result['old_pid']} killed with {args.held} generations in flight; "
          f"they got: {', '.join(result['held'])}")
    if result["recovered"] is None:
        print(f"FAILED: no episode within {args.limit:.0f} s of the kill")
        return 1
    print(f"new worker {result['new_pid']}: an episode answered {result['recovered']:.1f} s "
          f"after the kill")
    print(f"rerun: python benchmarks/worker_recovery.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
