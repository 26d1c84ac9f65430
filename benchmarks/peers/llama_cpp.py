"""llama.cpp's own benchmark tools, as benchmarks/peer_speed.py runs them:
llama-bench for one stream, llama-batched-bench for several at once."""
from __future__ import annotations

import json
import os
import subprocess

TOOLS = ("llama-bench", "llama-batched-bench")


class ToolFailed(RuntimeError):
    pass


def is_built(build_dir: str) -> bool:
    return all(os.access(os.path.join(build_dir, "bin", tool), os.X_OK) for tool in TOOLS)


def run_tool(build_dir: str, tool: str, args: list[str]) -> str:
    done = subprocess.run([os.path.join(build_dir, "bin", tool), *args], capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ToolFailed(f"{tool} exited with status {done.returncode}: {last}")
    return done.stdout


def one_stream(build_dir: str, model: str, length: int, threads: int, rounds: int, repack: bool) -> float:
    """llama-bench's text-generation test: new tokens/s of one sequence, no prompt (-p 0)."""
    out = run_tool(build_dir, "llama-bench", ["-m", model, "-p", "0", "-n", str(length), "-t", str(threads),
                                              "-r", str(rounds), "--repack", str(int(repack)), "-o", "json"])
    return float(json.loads(out)[0]["avg_ts"])


def streams_at_once(build_dir: str, model: str, streams: list[int], prompt: int, length: int,
                    threads: int, repack: bool) -> dict[str, float]:
    """llama-batched-bench: generated tokens of all sequences over the whole run, prompts included."""
    per_sequence = -(-(prompt + length) // 256) * 256  # its context is split evenly between sequences
    args = ["-m", model, "-c", str(max(streams) * per_sequence), "-npp", str(prompt), "-ntg", str(length),
            "-npl", ",".join(map(str, streams)), "-t", str(threads), "-tb", str(threads),
            "--output-format", "jsonl"]
    out = run_tool(build_dir, "llama-batched-bench", args if repack else args + ["-nr"])
    rates = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rates[str(row["pl"])] = row["pl"] * row["tg"] / row["t"]
    return rates


def measure(build_dir: str, model: str, streams: list[int], prompt: int, length: int, threads: int,
            rounds: int) -> tuple[dict[str, float], str]:
    """Rates by number of streams, and the setting they needed: weight repacking (the
    default) is turned off, for both tools, only when a run crashes with it."""
    def rates(repack: bool) -> dict[str, float]:
        found = {}
        if 1 in streams:
            found["1"] = one_stream(build_dir, model, length, threads, rounds, repack)
        many = [n for n in streams if n > 1]
        if many:
            found.update(streams_at_once(build_dir, model, many, prompt, length, threads, repack))
        return found

    try:
        return rates(True), ""
    except ToolFailed:
        return rates(False), "-nr (crashed with repacking)"
