"""The soak's requests: a repeatable mix of valid generations and hostile
input (wrong types, out-of-range values, oversize prefixes, odd unicode,
injection-looking callbacks, wrong methods and paths), each with the answers
it may get, and the rules every answer must keep (the load scenarios'
requests are in soak_scenarios.py).
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

# The per-client limit may answer anything with 429; a generation may find
# the queue full and get the intended 503 (both with Retry-After).
LIMITED = 429
OVERLOADED = 503

PREFIXES = [
    "Pikachu and Ash were", "Team Rocket", "Misty found a Togepi egg", "Brock cooks",
    # Odd but valid text: the model must take it like any other prefix.
    "Pikachu ⚡️ et Évoli 🎉", "ピカチュウとサトシ", "Ash \u202eReversed\u202c text",
    "Zero\u200bwidth\u200djoiners", "Combining a\u0301e\u0308", "Tab\tand\nnewline",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters", "",
]
SAFE_CALLBACKS = ["cb", "jQuery3_1.done", "$", "_x.y$z", "a" * 64]
OVERFULL = "ŵ" * 1000  # 1000 characters that take more tokens than the context leaves


@dataclass(frozen=True)
class Probe:
    kind: str             # what the request stands for, for the report
    target: str           # path and query exactly as sent (percent-encoded)
    expect: frozenset     # the statuses it may be answered with
    method: str = "GET"
    body: Optional[bytes] = None
    headers: tuple = ()   # (name, value) pairs sent besides Accept: */*


def query(*pairs) -> str:
    return "?" + "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe='')}"
                          for k, v in pairs)


def _generation(rng: random.Random) -> list:
    pairs = [("prefix", rng.choice(PREFIXES)), ("length", rng.randint(1, 12))]
    if rng.random() < 0.5:
        pairs.append(("seed", rng.randint(0, 2**31 - 1)))
    if rng.random() < 0.3:
        pairs.append(("temperature", rng.choice(["0", "0.7", "1", "1.5"])))
    if rng.random() < 0.3:
        pairs.append(("top_k", rng.choice([0, 1, 40, 1000])))
    if rng.random() < 0.2:
        pairs.append(("top_p", rng.choice(["0.5", "0.9", "1"])))
    if rng.random() < 0.3:
        pairs.append(("truncate", rng.choice(["0", "1", "no", "on"])))
    return pairs


def valid_probe(rng: random.Random) -> Probe:
    roll = rng.random()
    generated = frozenset({200, OVERLOADED})
    if roll < 0.70:
        return Probe("generate", "/" + query(*_generation(rng)), generated)
    if roll < 0.82:
        pairs = _generation(rng) + [("callback", rng.choice(SAFE_CALLBACKS))]
        return Probe("jsonp", "/" + query(*pairs), generated)
    if roll < 0.92:
        return Probe("stream", "/stream" + query(*_generation(rng)), generated)
    return Probe("probe", rng.choice(["/healthz", "/readyz", "/info", "/metrics"]),
                 frozenset({200}))


def _bad(kind, target, *statuses, method="GET", body=None) -> Probe:
    return Probe(kind, target, frozenset(statuses), method, body)


def bad_probes() -> list[Probe]:
    """One of each hostile request; the mix draws from them."""
    probes = []
    for name, value in [("length", "abc"), ("length", "1.5"), ("length", "0x10"),
                        ("temperature", "hot"), ("temperature", "nan"), ("temperature", "inf"),
                        ("top_k", "1e3"), ("top_p", "half"), ("seed", "-"), ("truncate", "maybe"),
                        ("include_prefix", "2"), ("length", "")]:
        probes.append(_bad("wrong type", "/" + query((name, value)), 400))
    for name, value in [("length", 0), ("length", 1024), ("length", -5), ("length", "9" * 40),
                        ("temperature", "5.01"), ("temperature", "-0.1"), ("top_k", 1001),
                        ("top_p", 0), ("top_p", "1.01"), ("seed", 2**31)]:
        probes.append(_bad("out of range", "/" + query((name, value)), 400))
    probes += [
        _bad("oversize prefix", "/" + query(("prefix", "a" * 1001)), 400),
        _bad("oversize prefix", "/" + query(("sample", "é" * 1001)), 400),
        # Known too long only once tokenized: a full engine refuses it first.
        _bad("oversize prefix", "/" + query(("prefix", OVERFULL), ("length", 1023)), 400,
             OVERLOADED),
        _bad("oversize prefix", "/" + query(("prefix", "x" * 20_000)), 414),
        _bad("odd unicode", "/?prefix=Ash%00Misty", 400),
        # Percent-encoded bytes that are not UTF-8 (stray bytes, an encoded
        # lone surrogate, an overlong encoding) are read as U+FFFD: an episode.
        Probe("generate", "/?length=4&prefix=%FF%FEAsh", frozenset({200, OVERLOADED})),
        Probe("generate", "/?length=4&prefix=%ED%A0%80", frozenset({200, OVERLOADED})),
        Probe("generate", "/?length=4&prefix=%C0%AF", frozenset({200, OVERLOADED})),
        _bad("unknown parameter", "/" + query(("lenght", 5)), 400),
        _bad("repeated parameter", "/" + query(("length", 1), ("length", 2)), 400),
        _bad("repeated parameter", "/" + query(("prefix", "a"), ("sample", "b")), 400),
        _bad("callback on a stream", "/stream" + query(("callback", "cb")), 400),
        _bad("POST without a JSON body", "/?prefix=Ash", 415, method="POST"),
        _bad("wrong method", "/healthz", 405, method="DELETE"),
        # Over the 16 kB nginx takes on /: refused before it reaches the app.
        _bad("oversize body", "/", 413, method="POST", body=b"x" * 17_000),
        _bad("unknown path", "/episodes", 404),
        _bad("unknown path", "/static/../../etc/passwd", 400, 404),
        _bad("unknown path", "/%2e%2e/%2e%2e/etc/passwd", 400, 404),
    ]
    for callback in ["alert(1)", "<script>alert(1)</script>", "a;alert(1)", "x\nalert(1)",
                     "constructor['x']", "window.location='//x'", "1a", "a" * 65, "ａlert",
                     "x\u2028y", ""]:
        probes.append(_bad("injection-looking callback", "/" + query(("callback", callback)),
                           400))
    return probes


def request_mix(count: int, seed: int, bad_share: float = 0.4) -> list[Probe]:
    """`count` requests, about `bad_share` of them hostile; the same for the same seed."""
    rng = random.Random(seed)
    bad = bad_probes()
    return [rng.choice(bad) if rng.random() < bad_share else valid_probe(rng)
            for _ in range(count)]


# ---------------------------------------------------------------- answers

def _retry_after_ok(headers) -> bool:
    value = headers.get("Retry-After", "")
    return value.isdigit() and int(value) >= 1


def _json_reason(status: int, body: bytes) -> Optional[str]:
    """Why a refusal's body is not a JSON reason, or None when it is."""
    try:
        payload = json.loads(body)
    except ValueError:
        return f"{status} without a JSON body: {body[:120]!r}"
    if not isinstance(payload, dict) or not str(payload.get("error", "")).strip():
        return f"{status} without a reason: {body[:120]!r}"
    if payload.get("status") != status:
        return f"{status} whose body says status {payload.get('status')!r}"
    return None


def _success_problem(probe: Probe, body: bytes) -> Optional[str]:
    text = body.decode("utf-8", errors="replace")
    if probe.kind == "generate":
        try:
            payload = json.loads(text)
            assert isinstance(payload["text"], str) and isinstance(payload["tokens"], int)
        except (ValueError, KeyError, TypeError, AssertionError):
            return f"200 that is not an episode: {text[:120]!r}"
    elif probe.kind == "jsonp":
        match = re.fullmatch(r"/\*\*/[A-Za-z_$][0-9A-Za-z_$.]*\((.*)\);\n", text, re.S)
        if not match or "sample_text" not in json.loads(match.group(1)):
            return f"200 that is not safe JSONP: {text[:120]!r}"
    elif probe.kind == "stream":
        if "event: done\n" not in text or "event: error" in text:
            return f"a stream that did not finish: {text[-200:]!r}"
    return None


# What a HEAD of each kind is answered with: the GET's headers, no body.
HEAD_CONTENT_TYPES = {"head page": "text/html", "head episode": "application/json",
                      "head stream": "text/event-stream"}


def _head_problem(probe: Probe, status: int, headers, body: bytes) -> Optional[str]:
    if body:
        return f"a HEAD answered with a body: {body[:120]!r}"
    wanted = "application/json" if status >= 400 else HEAD_CONTENT_TYPES.get(probe.kind)
    if wanted and not headers.get("Content-Type", "").startswith(wanted):
        return f"{status} of type {headers.get('Content-Type')!r}, expected {wanted}"
    return None


def problem_with(probe: Probe, status: int, headers, body: bytes) -> Optional[str]:
    """None when the answer keeps every rule; otherwise what is wrong with it."""
    where = f"{probe.method} {probe.target[:80]}"
    if b"Traceback" in body:
        return f"{where}: a traceback in the answer"
    if status >= 500 and status != OVERLOADED:
        return f"{where}: {status}"
    if status not in probe.expect | {LIMITED}:
        return f"{where}: {status}, expected {sorted(probe.expect)}"
    if status in (LIMITED, OVERLOADED) and not _retry_after_ok(headers):
        return f"{where}: {status} without Retry-After"
    if probe.method == "HEAD":  # no body to read a reason or an episode from
        problem = _head_problem(probe, status, headers, body)
    elif status >= 400:
        problem = _json_reason(status, body)
    else:
        problem = _success_problem(probe, body)
    return f"{where}: {problem}" if problem else None
