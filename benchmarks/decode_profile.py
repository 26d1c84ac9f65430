"""Where one decoding step's time goes: the engine's graph run alone at a few
batch sizes (mean time per step), then one traced step split into its parts,
and what sampling a token costs per row outside the graph.

    python benchmarks/decode_profile.py --checkpoint-dir build/bench/gpt2-small

The layer matmuls read every weight once per step, so their time against the
bytes they read shows how close decoding runs to the memory bandwidth.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

from app.engine.native import PROFILE_PARTS as PARTS  # the decoder's own clocks name them


def build_graph(checkpoint_dir: str, run_name: str, max_batch: int, threads: int | None,
                weight_dtype: str):
    """The engine's decoder graph with the checkpoint's weights, as Engine loads it,
    with a pool of a whole context for each row."""
    from app.engine.cache_pool import PAGE
    from app.engine.checkpoint import WeightReader, open_checkpoint
    from app.engine.engine import default_threads
    from app.engine.graph import DecoderGraph

    checkpoint = open_checkpoint(checkpoint_dir, run_name)
    pool_size = PAGE + max_batch * (checkpoint.hparams.n_ctx + PAGE)
    if weight_dtype == "int8":
        from app.engine.native import NativeDecoder
        graph = NativeDecoder(checkpoint.hparams, pool_size=pool_size,
                              threads=threads or default_threads(), max_batch=max_batch)
        graph.load_weights(WeightReader(checkpoint))
        return graph
    graph = DecoderGraph(checkpoint.hparams, pool_size=pool_size,
                         threads=threads or default_threads(), max_batch=max_batch,
                         weight_dtype=weight_dtype)
    graph.load_weights(WeightReader(checkpoint))
    return graph


def step_inputs(graph, batch: int, context: int):
    """A decoding step of `batch` rows at position `context`, each row a sequence
    of its own whose prompt fills its own places, as in the engine (rows reading
    the same places would find each other's keys and values in cache)."""
    import numpy as np
    from app.engine.cache_pool import PAGE

    span = -(-(context + 1) // PAGE) * PAGE
    places = (PAGE + np.arange(batch, dtype=np.int32)[:, None] * span
              + np.arange(span, dtype=np.int32)[None, :])
    graph.forward(np.zeros((batch, context), np.int32),
                  np.tile(np.arange(context, dtype=np.int32), (batch, 1)),
                  places[:, :context], places[:, :context])
    return (np.zeros((batch, 1), np.int32), np.full((batch, 1), context, np.int32),
            places[:, context:context + 1], places)


def classify(node_name: str, op_type: str, logits_op: str) -> str:
    if node_name == logits_op:
        return "vocabulary projection"
    if "MatMul" in op_type and "BatchMatMul" not in op_type:
        return "layer matmuls"
    if any(word in op_type for word in ("BatchMatMul", "Softmax", "Gather", "Scatter", "Cast")):
        return "attention and cache"
    return "other"


def traced_parts(graph, inputs) -> dict:
    """Milliseconds per part in one traced step (ops run one at a time:
    inter-op parallelism is 1, so the parts add up to the step)."""
    import tensorflow as tf

    metadata = tf.compat.v1.RunMetadata()
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    tokens, positions, write_at, read_at = inputs
    graph.session.run(graph.logits_last, {graph.tokens: tokens, graph.positions: positions,
                                          graph.write_at: write_at, graph.read_at: read_at},
                      options=options, run_metadata=metadata)
    parts = collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op_type = label.split("=", 1)[1].split("(")[0].strip() if "=" in label else ""
            parts[classify(node.node_name, op_type, graph.logits_last.op.name)] += \
                node.all_end_rel_micros / 1000
    return parts


def timed_parts(decoder, inputs, steps: int) -> dict:
    """Milliseconds per part of one step of the int8 decoder, from its own clocks."""
    decoder.profile(True)
    for _ in range(steps):
        decoder.forward(*inputs)
    return {part: seconds * 1000 / steps for part, seconds in decoder.profile(False).items()}


def weight_bytes(hparams, weight_dtype: str) -> tuple[int, int]:
    """Bytes the layer matmuls and the vocabulary projection read per step."""
    e, size = hparams.n_embd, {"bfloat16": 2, "float32": 4, "int8": 34 / 32}[weight_dtype]
    per_layer = e * 3 * e + e * e + e * 4 * e + 4 * e * e
    return hparams.n_layer * per_layer * size, hparams.n_vocab * e * size


def sampling_microseconds(vocab: int, rows: int = 200) -> float:
    """The engine's per-row sampling (temperature 0.7, top_k 40) on random logits."""
    import numpy as np
    from app.engine.sampling import TokenSampler

    sampler = TokenSampler(0.7, 40, 1.0, seed=1, vocab_size=vocab)
    logits = np.random.default_rng(0).standard_normal((rows, vocab)).astype(np.float32)
    started = time.perf_counter()
    for row in logits:
        sampler(row)
    return (time.perf_counter() - started) / rows * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description="Profile one decoding step of the engine.")
    parser.add_argument("--checkpoint-dir", default=os.path.join("build", "bench", "gpt2-small"))
    parser.add_argument("--run-name", default="run1")
    parser.add_argument("--batches", default="1,8,16",
                        help="rows per step; with float32 weights the engine runs one request "
                             "as 2 rows (1,8,16)")
    parser.add_argument("--context", type=int, default=128,
                        help="position of the step: the middle of a 256-token episode (128)")
    parser.add_argument("--steps", type=int, default=30, help="steps timed per batch size (30)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (all cores)")
    parser.add_argument("--weight-dtype", choices=("int8", "bfloat16", "float32"), default="int8",
                        help="weights as the engine holds them (int8: the native decoder, "
                             "timed by its own clocks; the others: TensorFlow, traced)")
    args = parser.parse_args()
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error("--batches must be comma-separated integers")
    if min(batches) < 1 or args.steps < 1 or not 1 <= args.context < 1000:
        parser.error("--batches and --steps must be at least 1, --context from 1 to 999")
    if not os.path.isfile(os.path.join(args.checkpoint_dir, args.run_name, "checkpoint")):
        parser.error(f"no checkpoint in {os.path.join(args.checkpoint_dir, args.run_name)} "
                     "(benchmarks/service_speed.py builds one)")

    graph = build_graph(args.checkpoint_dir, args.run_name, max(batches), args.threads,
                        args.weight_dtype)
    layer_bytes, vocab_bytes = weight_bytes(graph.hparams, args.weight_dtype)
    print(f"load average {os.getloadavg()[0]:.2f}; weights read per step: layers "
          f"{layer_bytes / 1e6:.0f} MB, vocabulary projection {vocab_bytes / 1e6:.0f} MB ({args.weight_dtype})")
    print(f"{'rows':>4} {'ms/step':>8} {'tok/s':>7}  one step: " + ", ".join(PARTS))
    for batch in batches:
        inputs = step_inputs(graph, batch, args.context)
        for _ in range(3):
            graph.forward(*inputs)
        started = time.perf_counter()
        for _ in range(args.steps):
            graph.forward(*inputs)
        step = (time.perf_counter() - started) / args.steps
        if args.weight_dtype == "int8":
            parts = timed_parts(graph, inputs, args.steps)
        else:
            parts = min((traced_parts(graph, inputs) for _ in range(3)),
                        key=lambda p: sum(p.values()))
        # With float32 weights one request runs as two rows.
        rows = 1 if batch == 2 and graph.min_rows == 2 else batch
        detail = ", ".join(f"{parts[p]:.1f}" for p in PARTS)
        print(f"{batch:>4} {step * 1000:>8.1f} {rows / step:>7.1f}  {detail} ms "
              f"(layer matmuls at {layer_bytes / parts['layer matmuls'] / 1e6:.0f} GB/s, "
              f"vocabulary at {vocab_bytes / parts['vocabulary projection'] / 1e6:.0f} GB/s)")
    print(f"sampling one row outside the graph (float64, top_k 40): "
          f"{sampling_microseconds(graph.hparams.n_vocab):.0f} us")
    print(f"rerun: .venv/bin/python benchmarks/decode_profile.py {' '.join(sys.argv[1:])}")
    graph.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
