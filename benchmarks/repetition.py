"""How much episodes repeat themselves, with and without repetition control.

Generates --episodes seeded episodes (seeds 0, 1, ...) from the default
prefix on a run (the demo model by default), once per setting, and prints
per setting: the share of word 4-grams that already appeared earlier in the
same episode, the share of episodes in which a sentence appears twice, and
the share of words the training text never uses (a ban on repeating token
n-grams can force a misspelt name, the second time it is written).
The settings are "off" (every control neutral), "service" (what `/` and
`/stream` use when the query leaves the controls out) and each --setting.

    python benchmarks/repetition.py
    python benchmarks/repetition.py --setting repetition_penalty=1.3 --setting presence_penalty=0.6,frequency_penalty=0.3
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

from app.engine import Engine, GenerationRequest
from app.validation import REPETITION_DEFAULTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONTROLS = ("repetition_penalty", "frequency_penalty", "presence_penalty", "no_repeat_ngram_size")
OFF = {name: getattr(GenerationRequest(), name) for name in CONTROLS}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[A-Za-z\u00C0-\u024F']+")


def repeated_ngram_share(text: str, n: int = 4) -> tuple[int, int]:
    """(word n-grams seen before in the same text, all word n-grams)."""
    words = text.lower().split()
    seen, repeated = set(), 0
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        repeated += gram in seen
        seen.add(gram)
    return repeated, max(0, len(words) - n + 1)


def repeats_a_sentence(text: str) -> bool:
    """Whether a sentence of at least four words appears twice."""
    sentences = [" ".join(s.lower().split()) for s in SENTENCE_END.split(text)]
    sentences = [s for s in sentences if len(s.split()) >= 4]
    return len(set(sentences)) < len(sentences)


def words_of(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def unknown_words(text: str, known: set[str]) -> tuple[int, int]:
    """(words the training text never uses, all words)."""
    words = WORD.findall(text.lower())
    return sum(word not in known for word in words), len(words)


def parse_setting(text: str) -> dict:
    setting = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in CONTROLS or not value:
            raise SystemExit(f"--setting takes name=value pairs of {', '.join(CONTROLS)}, "
                             f"got {item!r}")
        setting[name] = int(value) if name == "no_repeat_ngram_size" else float(value)
    return setting


def measure(engine: Engine, setting: dict, episodes: int, length: int, known: set[str]) -> dict:
    requests = [GenerationRequest(length=length, seed=seed, truncate=False, **setting)
                for seed in range(episodes)]
    generations = [engine.submit(request) for request in requests]
    texts = [g.result(timeout=3600).text for g in generations]
    repeated = [repeated_ngram_share(text) for text in texts]
    unknown = [unknown_words(text, known) for text in texts]
    return {"ngram": sum(r for r, _ in repeated) / max(1, sum(t for _, t in repeated)),
            "sentence": sum(map(repeats_a_sentence, texts)) / len(texts),
            "unknown": sum(u for u, _ in unknown) / max(1, sum(t for _, t in unknown)),
            "words": sum(len(text.split()) for text in texts) / len(texts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", default=os.path.join(ROOT, "checkpoint"))
    parser.add_argument("--run-name", default="run1")
    parser.add_argument("--corpus", default=os.path.join(ROOT, "data", "demo", "train.txt"),
                        help="the run's training text, for the unknown words")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--setting", action="append", default=[], type=parse_setting,
                        help="name=value[,name=value]: one more setting to measure")
    args = parser.parse_args()
    try:
        with open(args.corpus, encoding="utf-8") as f:
            known = words_of(f.read())
    except OSError as e:
        parser.error(f"cannot read the training text: {e}")
    # Enough slots that the whole set decodes together; a seeded episode is the
    # same in any batch.
    engine = Engine(args.checkpoint_dir, args.run_name, max_batch=8, max_queue=args.episodes,
                    queue_timeout=3600)
    engine.start()
    if not engine.wait_ready(300):
        print(f"the model did not load: {engine.error}", file=sys.stderr)
        return 1
    settings = [("off", OFF), ("service", REPETITION_DEFAULTS)]
    settings += [(",".join(f"{k}={v}" for k, v in s.items()), s) for s in args.setting]
    print(f"{args.episodes} episodes of {args.length} tokens from the default prefix, "
          f"model {engine.model_name}, seeds 0..{args.episodes - 1}, temperature 0.7, top_k 40")
    print(f"{'setting':<56} {'repeated 4-grams':>16} {'repeat a sentence':>18} "
          f"{'unknown words':>14} {'words':>6}")
    try:
        for name, setting in settings:
            figures = measure(engine, {**OFF, **setting}, args.episodes, args.length, known)
            label = name if name != "service" else "service: " + ",".join(
                f"{k}={v}" for k, v in setting.items())
            print(f"{label:<56} {figures['ngram']:>16.1%} {figures['sentence']:>18.0%} "
                  f"{figures['unknown']:>14.1%} {figures['words']:>6.0f}")
    finally:
        engine.close()
    print("rerun: " + shlex.join([os.path.relpath(sys.executable, ROOT),
                                  os.path.relpath(os.path.abspath(sys.argv[0]), ROOT),
                                  *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
