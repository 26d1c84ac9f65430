"""The requests of the soak's load scenarios, beside the mix of soak_requests.py:
full-length episodes past the service's capacity, HEAD requests, floods of
long prefixes made of distinct words, and request heads over nginx's limits.
Each list is the same for the same seed.
"""
from __future__ import annotations

import random
import string

from benchmarks.soak_requests import OVERLOADED, Probe, query

# The article's episode length: long enough that the slots and the queue fill.
EPISODE_LENGTH = 256
# Streams that are left after their first piece: only a cancel ends them early.
LEFT_STREAM_LENGTH = 1000
GENERATED = frozenset({200, OVERLOADED})


def _episode(rng: random.Random, length: int) -> list:
    # Seeded, so that an episode's length is the same whenever the mix is.
    return [("prefix", rng.choice(["Pikachu and Ash were", "Team Rocket", "Brock cooks"])),
            ("length", length), ("seed", rng.randint(0, 2**31 - 1))]


def overload_probes(count: int, seed: int) -> list[Probe]:
    """256-token episodes as JSON, JSONP and streams."""
    rng = random.Random(seed)
    probes = []
    for _ in range(count):
        pairs = _episode(rng, EPISODE_LENGTH)
        roll = rng.random()
        if roll < 0.6:
            probes.append(Probe("generate", "/" + query(*pairs), GENERATED))
        elif roll < 0.7:
            probes.append(Probe("jsonp", "/" + query(*pairs, ("callback", "cb")), GENERATED))
        else:
            probes.append(Probe("stream", "/stream" + query(*pairs), GENERATED))
    return probes


def head_probes(count: int, seed: int) -> list[Probe]:
    """HEAD of the page, of a 256-token episode and of a 256-token stream."""
    rng = random.Random(seed)
    probes = []
    for index in range(count):
        pairs = _episode(rng, EPISODE_LENGTH)
        probes.append([
            Probe("head page", "/", frozenset({200}), "HEAD", headers=(("Accept", "text/html"),)),
            Probe("head episode", "/" + query(*pairs), GENERATED, "HEAD"),
            Probe("head stream", "/stream" + query(*pairs), GENERATED, "HEAD"),
        ][index % 3])
    return probes


def left_stream_probes(count: int, seed: int) -> list[Probe]:
    """Streams of 1000 tokens, for clients that leave after the first piece."""
    rng = random.Random(seed)
    return [Probe("stream", "/stream" + query(*_episode(rng, LEFT_STREAM_LENGTH)), GENERATED)
            for _ in range(count)]


def distinct_cjk(rng: random.Random, count: int = 1000) -> str:
    """`count` different CJK ideographs: one word, never seen before, of
    thousands of byte-level symbols to merge."""
    return "".join(chr(c) for c in rng.sample(range(0x4E00, 0x9FFF), count))


def distinct_words(rng: random.Random, characters: int = 1000) -> str:
    """Random lowercase words up to `characters`: each one new to the tokenizer."""
    words, size = [], 0
    while size < characters:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10)))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:characters]


def flood_probes(count: int, seed: int) -> list[Probe]:
    """1000-character prefixes of distinct words, for 5 tokens each: CJK ones
    take more tokens than the context (a 400 once tokenized), Latin ones fit
    (an episode); with the engine full, a 503 before any tokenizing."""
    rng = random.Random(seed)
    probes = []
    for index in range(count):
        prefix = distinct_cjk(rng) if index % 2 else distinct_words(rng)
        path, kind = ("/", "generate") if rng.random() < 0.7 else ("/stream", "stream")
        probes.append(Probe(kind, path + query(("prefix", prefix), ("length", 5)),
                            frozenset({200, 400, OVERLOADED})))
    return probes


def _padding(count: int, size: int) -> tuple:
    return tuple((f"X-Pad-{i}", "p" * size) for i in range(count))


# Heads over a limit of nginx (one header over its 16 kB buffer, all of them
# over four buffers) or of the headers passed to the app (Host, Accept: a 431),
# and one within nginx's buffers but, passed on whole, over uWSGI's 64 kB
# packet (once a 500): only what the app reads goes on, so it is answered.
OVERSIZED_HEADS = [
    Probe("oversized head", "/?length=1", frozenset({400}), headers=_padding(1, 20_000)),
    Probe("oversized head", "/?length=1", frozenset({400}), headers=_padding(5, 15_000)),
    Probe("oversized head", "/?length=1", frozenset({400}),
          headers=(("Cookie", "session=" + "c" * 20_000),)),
    Probe("oversized head", "/?length=1", frozenset({431}),
          headers=(("Accept", "application/json;q=0.9, " * 100),)),
    Probe("oversized head", "/?length=1", frozenset({431}),
          headers=(("Host", "h" * 300 + ".example"),)),
    Probe("big head", "/healthz?pad=" + "a" * 16_000, frozenset({200}),
          headers=_padding(3, 15_000)),
]


def oversized_head_probes(count: int) -> list[Probe]:
    return [OVERSIZED_HEADS[i % len(OVERSIZED_HEADS)] for i in range(count)]
