"""Decoding speed of the Python peers, CTranslate2 and transformers, run by
benchmarks/peer_speed.py inside the peers' virtualenv (build/peers-venv).

    python benchmarks/peers/python_peers.py ct2 build/bench/peers/ct2-int8 --tokenizer build/bench/peers/hf
    python benchmarks/peers/python_peers.py hf build/bench/peers/hf

Prints one JSON object: streams at once -> aggregate new tokens per second,
each the best of --rounds runs. Every stream generates exactly --length tokens
after the same prompt of --prompt-tokens tokens (greedy; end of text cannot stop it early).
"""
from __future__ import annotations

import argparse
import json
import time

PROMPT = "Pikachu and Ash were"


def prompt_ids(tokenizer_dir: str, count: int) -> list[int]:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer_dir).encode(PROMPT)
    return (ids * count)[:count]  # exactly `count` tokens whatever the vocabulary


def ct2_runner(model_dir: str, compute_type: str, threads: int, prompt: list[int]):
    import ctranslate2

    generator = ctranslate2.Generator(model_dir, device="cpu", compute_type=compute_type,
                                      intra_threads=threads, inter_threads=1)
    with open(f"{model_dir}/vocabulary.json", encoding="utf-8") as f:
        vocabulary = json.load(f)
    tokens = [vocabulary[i] for i in prompt]

    def run(streams: int, length: int) -> int:
        if streams == 1:  # the streaming call a server would use for one request
            return sum(1 for _ in generator.generate_tokens(tokens, max_length=length, min_length=length,
                                                            sampling_topk=1))
        results = generator.generate_batch([tokens] * streams, max_length=length, min_length=length,
                                           sampling_topk=1, include_prompt_in_result=False)
        return sum(len(r.sequences_ids[0]) for r in results)
    return run


def hf_runner(model_dir: str, threads: int, prompt: list[int]):
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(threads)
    model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    eos = model.config.eos_token_id

    def run(streams: int, length: int) -> int:
        ids = torch.tensor([prompt] * streams)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 min_new_tokens=length, max_new_tokens=length, pad_token_id=eos)
        return (out.shape[1] - ids.shape[1]) * streams
    return run


def measure(run, streams: list[int], length: int, rounds: int) -> dict[str, float]:
    run(1, 8)  # warm-up: first-call allocations and thread start-up
    rates = {}
    for n in streams:
        best = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            tokens = run(n, length)
            elapsed = time.perf_counter() - started
            if tokens != n * length:
                raise SystemExit(f"{n} streams made {tokens} tokens, not {n * length}")
            best = max(best, tokens / elapsed)
        rates[str(n)] = best
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=("ct2", "hf"))
    parser.add_argument("model_dir")
    parser.add_argument("--tokenizer", help="a Hugging Face folder with the tokenizer (default: model_dir)")
    parser.add_argument("--compute-type", default="float32", help="CTranslate2's compute type")
    parser.add_argument("--streams", default="1,8,16", help="comma-separated")
    parser.add_argument("--length", type=int, default=256, help="new tokens per stream")
    parser.add_argument("--prompt-tokens", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    prompt = prompt_ids(args.tokenizer or args.model_dir, args.prompt_tokens)
    if args.peer == "ct2":
        run = ct2_runner(args.model_dir, args.compute_type, args.threads, prompt)
    else:
        run = hf_runner(args.model_dir, args.threads, prompt)
    streams = [int(s) for s in args.streams.split(",")]
    print(json.dumps(measure(run, streams, args.length, args.rounds)))


if __name__ == "__main__":
    main()
