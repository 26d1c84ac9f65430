"""What a client that goes away costs the others, through the real stack
(nginx -> uWSGI -> engine on 127.0.0.1), with one generation slot on a
GPT-2-small-shaped random checkpoint (built once in build/bench/).

    python benchmarks/abandoned_requests.py
    python benchmarks/abandoned_requests.py --length 500

For each way of leaving (a GET / closed after --after seconds, a HEAD
/stream, a /stream closed after --after seconds) it prints the tokens the
engine generated for the leaver (pokegen_engine_tokens_generated) against the
--length asked for, and how long the next 8-token request then took. Before
generations were cancelled on every route, that request waited for the
abandoned episode to be written to nobody.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time

import requests

from benchmarks.service_speed import ensure_checkpoint
from pokegen.service_stack import ServiceStack, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NEXT = "/?prefix=Misty&length=8&seed=1"


def leave_get(stack, query, after):
    conn = socket.create_connection(("127.0.0.1", stack.port))
    conn.sendall(f"GET /?{query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    time.sleep(after)
    conn.close()


def leave_head(stack, query, after):
    requests.head(stack.url + "/stream?" + query, timeout=300)


def leave_stream(stack, query, after):
    response = requests.get(stack.url + "/stream?" + query, stream=True, timeout=300)
    next(response.iter_lines())
    time.sleep(after)
    response.close()


def measure(stack, leave, length, after) -> dict:
    assert wait_for(lambda: stack.metric("pokegen_generations_in_flight") == 0, timeout=600)
    before = stack.metric("pokegen_engine_tokens_generated")
    leave(stack, f"prefix=Ash&length={length}&seed=7&truncate=0", after)
    started = time.monotonic()
    answer = requests.get(stack.url + NEXT, timeout=600)
    next_took = time.monotonic() - started
    assert wait_for(lambda: stack.metric("pokegen_generations_in_flight") == 0, timeout=600)
    generated = stack.metric("pokegen_engine_tokens_generated") - before
    return {"tokens": generated - answer.json().get("tokens", 0),
            "next_seconds": next_took, "next_status": answer.status_code}


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown CPU")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", default=os.path.join(ROOT, "build", "bench"),
                        help="holds run1 (built as gpt2-small when missing)")
    parser.add_argument("--length", type=int, default=1000, help="tokens the leaver asks for")
    parser.add_argument("--after", type=float, default=1.0, help="seconds before leaving")
    args = parser.parse_args()
    ensure_checkpoint(args.checkpoint_dir, "gpt2-small")
    stack = ServiceStack(CHECKPOINT_DIR=os.path.abspath(args.checkpoint_dir), RUN_NAME="run1",
                         GENERATION_CONCURRENCY=1, QUEUE_SIZE=4).start(timeout=600)
    try:
        print(f"{cpu_model()}; one slot; leavers ask for {args.length} tokens")
        for name, leave in (("GET / closed", leave_get), ("HEAD /stream", leave_head),
                            ("/stream closed", leave_stream)):
            result = measure(stack, leave, args.length, args.after)
            print(f"{name:>15}: {result['tokens']:5.0f} tokens generated for it; the next "
                  f"8-token request took {result['next_seconds']:.2f} s "
                  f"({result['next_status']})")
    finally:
        stack.stop()
    print(f"rerun: python benchmarks/abandoned_requests.py --length {args.length} "
          f"--after {args.after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
