"""Decoding speed of the pokegen engine next to llama.cpp, CTranslate2 and
transformers, side by side in one run, on one random checkpoint of GPT-2
small's shape.

    make bench-peers                                   # sets the peers up, then runs this
    python benchmarks/peer_speed.py
    python benchmarks/peer_speed.py --quick --peers llama,ct2

1. Builds the checkpoint once (build/bench/gpt2-small, shared with service_speed.py).
2. Exports it with export_model.py to a Hugging Face folder and GGUF files
   (q8_0, bf16, f16), and converts the folder to CTranslate2 (int8, float32),
   all kept in build/bench/peers/.
3. Runs each peer in its own process (the peers from build/peers-venv and
   build/llama.cpp-*, made by benchmarks/peers/setup.sh): new tokens after a
   5-token prompt, 2 threads, aggregate tokens/s at 1, 8 and 16 streams at once.
4. Prints one table, each figure with its ratio to the fastest peer at the same
   number of streams, and the CPU it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from app.engine.native import cpu_flags, cpu_runs
from benchmarks import engine_speed
from benchmarks.peers import llama_cpp
from benchmarks.service_speed import DEFAULT_CHECKPOINT_DIR, RUN_NAME, cpu_model, ensure_checkpoint, model_description

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PEERS = ("pokegen", "llama", "ct2", "hf")
PEERS_VENV = os.path.join("build", "peers-venv")
LLAMA_BUILDS = {"native": os.path.join("build", "llama.cpp-native"),
                "AVX2": os.path.join("build", "llama.cpp-avx2")}
GGUF_TYPES = ("q8_0", "bf16", "f16")
CT2_TYPES = ("int8", "float32")
NOT_SET_UP = "not set up (make bench-peers)"
PROMPT_TOKENS = 5
QUICK = dict(length=32, rounds=1)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}",
          file=sys.stderr, flush=True)


@dataclass
class Row:
    peer: str
    weights: str
    setting: str = ""
    rates: dict[str, float] = field(default_factory=dict)
    note: str = ""  # why there are no figures


# ------------------------------------------------------------------ models

def run_checked(command: list[str], what: str, env: dict | None = None) -> str:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"{what}: {last}")
    return done.stdout


def is_fresh(path: str, source: str) -> bool:
    return os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(source)


def export(run_dir: str, output: str, fmt: str, outtype: str = "f32") -> str:
    """export_model.py's output, made again only when the checkpoint is newer."""
    if not is_fresh(output, os.path.join(run_dir, "checkpoint")):
        log(f"exporting {output}")
        run_checked([sys.executable, "export_model.py", run_dir, "--format", fmt, "--outtype", outtype,
                     "--output", output, "--force"], f"export to {output} failed")
    return output


def ct2_convert(hf_dir: str, output: str, quantization: str) -> str:
    """ct2-transformers-converter's folder, written aside and renamed into place."""
    if is_fresh(output, os.path.join(hf_dir, "model.safetensors")):
        return output
    log(f"converting {output}")
    building = tempfile.mkdtemp(dir=os.path.dirname(output), prefix=".ct2-")
    run_checked([os.path.join(PEERS_VENV, "bin", "ct2-transformers-converter"), "--model", hf_dir,
                 "--output_dir", building, "--quantization", quantization, "--force"],
                f"CTranslate2 conversion to {output} failed")
    if os.path.exists(output):
        os.rename(output, building + ".old")
        shutil.rmtree(building + ".old")
    os.rename(building, output)
    return output


# ------------------------------------------------------------------ peers

def measure_pokegen(checkpoint_dir: str, streams: list[int], length: int, rounds: int,
                    drafts: bool = True, kernel: str = "") -> Row:
    """The engine in-process; with drafts=False, speculation off (the engine's own speed);
    with a kernel, that build of the int8 decoder forced (POKEGEN_KERNEL)."""
    out, figures = engine_speed.measure(
        checkpoint_dir, RUN_NAME, ["--concurrency", ",".join(map(str, streams)), "--length", str(length),
                                   "--rounds", str(rounds), "--threads", "2",
                                   *([] if drafts else ["--speculative-tokens", "0"])],
        env={"POKEGEN_KERNEL": kernel} if kernel else None)
    weights = re.search(r"(\w+) weights", out)
    rates = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}
    row = Row("pokegen engine" + (f" ({kernel})" if kernel else "") + ("" if drafts else ", no drafts"),
              weights.group(1) if weights else "engine default",
              "engine_speed.py" + ("" if drafts else " --speculative-tokens 0"), rates)
    acceptance = figures.get("acceptance", {})
    if drafts and acceptance:
        row.setting += "; drafts kept: " + ", ".join(
            f"{n}: {share:.0%}" if share is not None else f"{n}: none made"
            for n, share in acceptance.items())
    return row


def measure_llama(models: dict[str, str], streams: list[int], length: int, rounds: int,
                  label: str = "") -> list[Row]:
    rows = []
    for build_name, build_dir in LLAMA_BUILDS.items():
        for outtype, model in models.items():
            row = Row(f"llama.cpp ({build_name}){label}", outtype.upper())
            if not llama_cpp.is_built(os.path.join(ROOT, build_dir)):
                row.note = NOT_SET_UP
            else:
                log(f"llama.cpp {build_name} {outtype}")
                try:
                    row.rates, row.setting = llama_cpp.measure(build_dir, model, streams, PROMPT_TOKENS,
                                                               length, 2, rounds)
                except llama_cpp.ToolFailed as e:
                    row.note = str(e)
                log_row(row)
            rows.append(row)
    return rows


def measure_python_peer(peer: str, model_dir: str, hf_dir: str, streams: list[int], length: int,
                        rounds: int, compute_type: str = "float32") -> dict[str, float]:
    log(f"{peer} {compute_type}")
    out = run_checked([os.path.join(PEERS_VENV, "bin", "python"), os.path.join(HERE, "peers", "python_peers.py"),
                       peer, model_dir, "--tokenizer", hf_dir, "--compute-type", compute_type,
                       "--streams", ",".join(map(str, streams)), "--length", str(length),
                       "--prompt-tokens", str(PROMPT_TOKENS), "--rounds", str(rounds), "--threads", "2"],
                      f"{peer} failed")
    return json.loads(out.strip().splitlines()[-1])


def attempt(row: Row, measure, needs_venv: bool = False) -> Row:
    """measure(row)'s row; a peer that is missing or fails is reported in its row,
    and the others still run."""
    if needs_venv and not os.path.isfile(os.path.join(ROOT, PEERS_VENV, ".installed")):
        row.note = NOT_SET_UP
        return row
    try:
        row = measure(row)
    except RuntimeError as e:
        row.note = f"failed: {e}"
    log_row(row)
    return row


def log_row(row: Row) -> None:
    """Each figure as soon as it is known, so that a cut-short run still tells something."""
    figures = ", ".join(f"{n}: {rate:.1f}" for n, rate in row.rates.items())
    log(f"{row.peer} {row.weights} {row.setting}: {figures or row.note}")


# ------------------------------------------------------------------ report

def format_table(rows: list[Row], streams: list[int]) -> str:
    """Each figure with its ratio to the fastest peer (pokegen excluded) at that many streams."""
    fastest = {}
    for n in map(str, streams):
        peer_rates = [r.rates[n] for r in rows if n in r.rates and not r.peer.startswith("pokegen")]
        fastest[n] = max(peer_rates, default=0.0)
    heads = ["peer", "weights"] + [f"{n} stream{'s' if n > 1 else ''} tok/s" for n in streams] + ["setting"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        if row.note:
            cells = [row.note] + [""] * (len(streams) - 1)
        else:
            cells = [f"{row.rates[str(n)]:.1f} ({row.rates[str(n)] / fastest[str(n)]:.2f}x)"
                     if str(n) in row.rates and fastest[str(n)] else "-" for n in streams]
        lines.append("| " + " | ".join([row.peer, row.weights, *cells, row.setting]) + " |")
    return "\n".join(lines)


def cpu_description() -> str:
    flags = cpu_flags()
    sets = [name for flag, name in (("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512"),
                                    ("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16"), ("amx_tile", "AMX"))
            if flag in flags]
    return f"{cpu_model()} ({', '.join(sets) or 'no AVX2'}), {os.cpu_count()} cores"


# ------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR)
    parser.add_argument("--preset", default="gpt2-small", help="scratch preset when building the checkpoint")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of: {', '.join(PEERS)}")
    parser.add_argument("--streams", default="1,8,16", help="streams at once, comma-separated")
    parser.add_argument("--length", type=int, default=256, help="new tokens per stream")
    parser.add_argument("--rounds", type=int, default=2, help="runs per figure (best kept)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    parser.add_argument("--trained", default=os.path.join("build", "bench", "grown"),
                        help="checkpoint folder of a trained GPT-2-small-shaped model, for the "
                             "speculative decoding figures (benchmarks/grow_model.py makes one)")
    args = parser.parse_args()
    if args.quick:
        args.length, args.rounds = QUICK["length"], QUICK["rounds"]
    chosen = args.peers.split(",")
    if set(chosen) - set(PEERS):
        parser.error(f"unknown peers {sorted(set(chosen) - set(PEERS))}; choose from {', '.join(PEERS)}")
    streams = [int(s) for s in args.streams.split(",")]
    os.chdir(ROOT)

    ensure_checkpoint(args.checkpoint_dir, args.preset)
    run_dir = os.path.join(args.checkpoint_dir, RUN_NAME)
    exports = os.path.join(os.path.dirname(args.checkpoint_dir.rstrip("/")), "peers")
    os.makedirs(exports, exist_ok=True)
    hf_dir = export(run_dir, os.path.join(exports, "hf"), "hf") if {"ct2", "hf"} & set(chosen) else ""

    load_at_start = os.getloadavg()[0]
    rows: list[Row] = []
    if "pokegen" in chosen:
        log("pokegen engine")
        for drafts in (True, False):
            rows.append(attempt(Row("pokegen engine", "-"), lambda row, drafts=drafts: measure_pokegen(
                args.checkpoint_dir, streams, args.length, args.rounds, drafts)))
        if cpu_runs("avx512"):  # the default is not what an AVX2-only CPU (t2.medium) runs
            rows.append(attempt(Row("pokegen engine (avx2)", "-"), lambda row: measure_pokegen(
                args.checkpoint_dir, streams, args.length, args.rounds, kernel="avx2")))
    if "llama" in chosen:
        models = {t: export(run_dir, os.path.join(exports, f"model-{t}.gguf"), "gguf", t) for t in GGUF_TYPES}
        rows += measure_llama(models, streams, args.length, args.rounds)
    for ct2_type in CT2_TYPES if "ct2" in chosen else ():
        def run_ct2(row, ct2_type=ct2_type):
            model = ct2_convert(hf_dir, os.path.join(exports, f"ct2-{ct2_type}"), ct2_type)
            row.rates = measure_python_peer("ct2", model, hf_dir, streams, args.length, args.rounds, ct2_type)
            return row
        rows.append(attempt(Row("CTranslate2", ct2_type), run_ct2, needs_venv=True))
    if "hf" in chosen:
        def run_hf(row):
            row.rates = measure_python_peer("hf", hf_dir, hf_dir, streams, args.length, args.rounds)
            return row
        rows.append(attempt(Row("transformers", "float32", "generate(), greedy"), run_hf, needs_venv=True))

    trained_rows: list[Row] = []
    if args.trained and os.path.isdir(os.path.join(args.trained, RUN_NAME)):
        # Speculation's speed-up depends on what the model predicts: one stream on a
        # trained model (benchmarks/grow_model.py), the engine with and without drafts
        # next to llama.cpp's Q8_0 on the same weights.
        trained_run = os.path.join(args.trained, RUN_NAME)
        log("trained model")
        for drafts in (True, False):
            trained_rows.append(attempt(Row("pokegen engine", "-"), lambda row, drafts=drafts: measure_pokegen(
                args.trained, [1], args.length, args.rounds, drafts)))
        if "llama" in chosen:
            gguf = export(trained_run, os.path.join(exports, "trained-q8_0.gguf"), "gguf", "q8_0")
            trained_rows += measure_llama({"q8_0": gguf}, [1], args.length, args.rounds)
    elif args.trained:
        log(f"no trained model in {args.trained} (make model, then benchmarks/grow_model.py)")

    load_at_end = os.getloadavg()[0]
    print(f"\nModel: {model_description(args.checkpoint_dir)}")
    print(f"CPU: {cpu_description()}; load average {load_at_start:.2f} at start, {load_at_end:.2f} at end")
    print(f"{args.length} new tokens per stream after a {PROMPT_TOKENS}-token prompt, 2 threads; "
          f"aggregate tokens/s, best of {args.rounds}; (x) = ratio to the fastest peer\n")
    print(format_table(rows, streams))
    if trained_rows:
        print(f"\nSpeculative decoding, one stream on a trained model ({model_description(args.trained, 'the demo model grown to this shape')}), "
              "(x) = ratio to the fastest llama.cpp:\n")
        print(format_table(trained_rows, [1]))
    print(f"\nrerun: {shlex.join(['.venv/bin/python', 'benchmarks/peer_speed.py', *sys.argv[1:]])}"
          f" (or make bench-peers)")


if __name__ == "__main__":
    main()
