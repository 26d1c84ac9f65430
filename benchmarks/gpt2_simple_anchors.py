"""The yardsticks pokegen is measured against: gpt-2-simple serving a checkpoint
the three ways one can, each printed as one JSON object on stdout.

    generate     one session and load_gpt2() once, then gpt2.generate() per
                 request: each call builds a new sampling loop into the graph
    loop         one session, gpt-2-simple's sampling loop built once at a
                 fixed batch size and run per request (the fastest it can do)
    per-request  what the original service did: a fresh graph and session,
                 load_gpt2() and generate() for every request

benchmarks/service_speed.py runs each mode in its own process, so that their
memory never mixes with the service's:

    python benchmarks/gpt2_simple_anchors.py generate --checkpoint-dir build/bench/gpt2-small
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

DEFAULT_PREFIX = "Pikachu and Ash were"


def memory_mib() -> dict:
    """This process's resident memory now and at its peak."""
    figures = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                figures[name] = int(value.split()[0]) / 1024
    return {"rss_mib": figures.get("VmRSS"), "peak_rss_mib": figures.get("VmHWM")}


def graph_ops() -> int:
    import tensorflow as tf
    return len(tf.compat.v1.get_default_graph().get_operations())


@contextlib.contextmanager
def quiet_stdout():
    """gpt-2-simple prints progress on stdout, which carries this script's JSON."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def sampling(args) -> dict:
    return dict(length=args.length, temperature=args.temperature, top_k=args.top_k)


def measure_generate(args) -> dict:
    """gpt2.generate() on one persistent session, as a long-running server would call it."""
    import gpt_2_simple as gpt2

    with quiet_stdout():
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, checkpoint_dir=args.checkpoint_dir, run_name=args.run_name)
    calls = []
    for call in range(args.calls):
        ops_before = graph_ops()
        started = time.perf_counter()
        with quiet_stdout():
            gpt2.generate(sess, checkpoint_dir=args.checkpoint_dir, run_name=args.run_name,
                          prefix=args.prefix, seed=args.seed + call, return_as_list=True,
                          **sampling(args))
        seconds = time.perf_counter() - started
        # generate() has no early stop: it always writes `length` tokens.
        calls.append({"seconds": seconds, "tokens": args.length,
                      "tokens_per_second": args.length / seconds,
                      "graph_ops_added": graph_ops() - ops_before})
    sess.close()
    return {"mode": "generate", "calls": calls, "graph_ops": graph_ops(), **memory_mib(),
            "tokens_per_second": _steady(calls, "tokens_per_second"),
            "graph_ops_per_call": statistics.median(c["graph_ops_added"] for c in calls)}


def measure_loop(args) -> dict:
    """gpt-2-simple's sampling loop built once per batch size, then only run."""
    import gpt_2_simple as gpt2
    import numpy as np
    import tensorflow as tf
    from gpt_2_simple.src import encoder, model, sample

    run_dir = os.path.join(args.checkpoint_dir, args.run_name)
    with quiet_stdout():
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, checkpoint_dir=args.checkpoint_dir, run_name=args.run_name)
    hparams = model.default_hparams()
    with open(os.path.join(run_dir, "hparams.json")) as f:
        hparams.override_from_dict(json.load(f))
    prompt = encoder.get_encoder(run_dir).encode(args.prefix)
    results = {}
    for batch in args.batches:
        context = tf.compat.v1.placeholder(tf.int32, [batch, None])
        tf.compat.v1.set_random_seed(args.seed)
        output = sample.sample_sequence(hparams=hparams, length=args.length, context=context,
                                        batch_size=batch, temperature=args.temperature,
                                        top_k=args.top_k)
        ops_built = graph_ops()
        runs = []
        for _ in range(args.calls):
            started = time.perf_counter()
            tokens = sess.run(output, feed_dict={context: batch * [prompt]})
            seconds = time.perf_counter() - started
            generated = int(np.size(tokens[:, len(prompt):]))
            runs.append({"seconds": seconds, "tokens": generated,
                         "tokens_per_second": generated / seconds})
        results[str(batch)] = {"runs": runs, "tokens_per_second": _steady(runs, "tokens_per_second"),
                               "graph_ops_added_by_runs": graph_ops() - ops_built}
    sess.close()
    return {"mode": "loop", "batches": results, **memory_mib()}


def measure_per_request(args) -> dict:
    """A fresh graph, session and load_gpt2() for every request, then generate()."""
    import gpt_2_simple as gpt2
    import tensorflow as tf

    requests = []
    for call in range(args.calls):
        started = time.perf_counter()
        tf.compat.v1.reset_default_graph()
        with quiet_stdout():
            sess = gpt2.start_tf_sess()
            gpt2.load_gpt2(sess, checkpoint_dir=args.checkpoint_dir, run_name=args.run_name)
            loaded = time.perf_counter()
            gpt2.generate(sess, checkpoint_dir=args.checkpoint_dir, run_name=args.run_name,
                          prefix=args.prefix, seed=args.seed + call, return_as_list=True,
                          **sampling(args))
        seconds = time.perf_counter() - started
        rss = memory_mib()["rss_mib"]  # while this request's model is still loaded
        sess.close()
        requests.append({"seconds": seconds, "load_seconds": loaded - started,
                         "tokens": args.length, "tokens_per_second": args.length / seconds,
                         "rss_mib": rss})
    return {"mode": "per-request", "requests": requests, **memory_mib(),
            "tokens_per_second": _steady(requests, "tokens_per_second"),
            "seconds_per_request": statistics.median(r["seconds"] for r in requests)}


def _steady(runs: list[dict], key: str) -> float:
    """The median once the process is warm: the first run pays one-time set-up."""
    warm = runs[1:] or runs
    return statistics.median(run[key] for run in warm)


MODES = {"generate": measure_generate, "loop": measure_loop, "per-request": measure_per_request}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure gpt-2-simple serving a checkpoint; prints one JSON object.")
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--checkpoint-dir", required=True, help="folder holding the run folder")
    parser.add_argument("--run-name", default="run1")
    parser.add_argument("--calls", type=int, default=4,
                        help="requests (generate, per-request) or runs per batch size (loop); "
                             "the first is not counted in the steady figure (4)")
    parser.add_argument("--batches", default="1", help="loop: comma-separated batch sizes (1)")
    parser.add_argument("--length", type=int, default=256, help="tokens per request (256)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if args.calls < 1 or args.length < 1 or min(args.batches) < 1:
        parser.error("--calls, --length and --batches must be at least 1")
    if not os.path.isfile(os.path.join(args.checkpoint_dir, args.run_name, "checkpoint")):
        parser.error(f"no checkpoint in {os.path.join(args.checkpoint_dir, args.run_name)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    print(json.dumps(MODES[args.mode](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
