"""Hypothesis strategies for requests to the API: well-formed queries, hostile
ones, and raw bytes. Lengths stay short so that each generation is quick."""
from __future__ import annotations

import urllib.parse

from hypothesis import strategies as st

from api_contract import CALLBACK, GENERATION_PARAMETERS

SHORT_LENGTH = st.integers(1, 8).map(str)

ODD_TEXT = st.sampled_from([
    "\u202eevil\u202c",  # right-to-left override
    "שלום עולם", "مرحبا بالعالم",
    "👩‍👩‍👧‍👦", "🐭⚡ Pikachu", "\U0010fffd", "\ufffe\uffff",
    "e\u0301\u0301\u0301", "\ufeffBOM", "line\u2028sep\u2029", "zero\u200bwidth\u200d",
    "\r\n\t", "\x7f\x1b[31mred", "\x00", "a\x00b",
    "</script><script>alert(1)</script>", "'; DROP TABLE episodes; --",
    "{{7*7}}", "${7*7}", "%s%s%n", "\\u0000", "%00", "%ED%A0%80",
    "ℌ𝔢𝔩𝔩𝔬", "Ａｓｈ", "İstanbul ß ﬁ",
])
ANY_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),  # Cs: not encodable
    ODD_TEXT,
    st.lists(ODD_TEXT, max_size=4).map("".join),
)
PREFIX_TEXT = st.one_of(
    ANY_TEXT.filter(lambda text: "\x00" not in text),
    # Long prefixes: ASCII fits the context, emoji overflow it (1+ tokens each).
    st.tuples(st.sampled_from(["a", "Ash ", "é", "😀", "\u202e"]), st.integers(200, 1000))
      .map(lambda t: (t[0] * t[1])[:t[1]]),
)
BOOLEAN_WORDS = st.sampled_from(["1", "0", "true", "FALSE", "Yes", "no", "on", "OFF", " on "])


def number_text(low: float, high: float) -> st.SearchStrategy:
    return st.one_of(st.floats(low, high).map(repr), st.floats(low, high).map(lambda x: f"{x:.3g}"),
                     st.sampled_from([f"{low:g}", f"{high:g}", f"+{high:g}", f" {high:g} "]))


VALID_VALUES = {
    "temperature": number_text(0, 5),
    "top_k": st.one_of(st.integers(0, 1000).map(str), st.sampled_from(["+7", " 7 ", "007"])),
    "top_p": st.one_of(st.floats(0, 1, exclude_min=True).map(repr), st.just("1")),
    "seed": st.integers(0, 2**31 - 1).map(str),
    "truncate": BOOLEAN_WORDS,
    "include_prefix": BOOLEAN_WORDS,
    "callback": st.from_regex(CALLBACK, fullmatch=True),
    "_": ANY_TEXT,
}


@st.composite
def valid_queries(draw, jsonp=True):
    """(name, value) pairs, every one well formed and in range."""
    pairs = [("length", draw(SHORT_LENGTH))]
    prefix_name = draw(st.sampled_from(["prefix", "sample", None]))
    if prefix_name:
        pairs.append((prefix_name, draw(PREFIX_TEXT)))
    for name, values in VALID_VALUES.items():
        if (jsonp or name not in ("callback", "_")) and draw(st.booleans()):
            pairs.append((name, draw(values)))
    return draw(st.permutations(pairs))


HOSTILE_VALUES = st.one_of(
    ANY_TEXT,
    st.integers(-10**40, 10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-Infinity", "1e999", "-1e999", "1e-999", "-0",
                     "0x10", "1_000", "٣", "１", "1,5", "1.5.5", "--1", "+-1", "", " ", "1e", "e1",
                     ".", "0.", "1.", "9" * 5000, "1" + "0" * 400, "0" * 40 + "1", "true", "null",
                     "[]", "{}", "0.5e1", "5e-324", "1e-310"]),
    # Oversize values, just over the prefix limit and far over it.
    st.tuples(st.sampled_from(["x", "é", "😀", "\u202e", " "]), st.integers(1001, 3000))
      .map(lambda t: t[0] * t[1]),
    # Callbacks that would run script if they were reflected.
    st.sampled_from(["alert(1)", "a;alert(1)", "a b", "a\u2028b", "x</script>", "a" * 65,
                     "constructor.constructor('alert(1)')()", "1abc", "a-b", "ａ", "a\nb",
                     "__proto__", "$", "a..b", "_.x$"]),
)
PARAMETER_NAMES = st.one_of(st.sampled_from(sorted(GENERATION_PARAMETERS)), ANY_TEXT)


@st.composite
def hostile_queries(draw):
    """One to four parameters of any name and value, repeated or not; length
    stays short unless it is one of them."""
    pairs = draw(st.lists(st.tuples(PARAMETER_NAMES, HOSTILE_VALUES), min_size=1, max_size=4))
    if all(name != "length" for name, _ in pairs):
        pairs.append(("length", draw(SHORT_LENGTH)))
    return draw(st.permutations(pairs))


# Raw bytes after "?": through nginx the request line must stay one line.
RAW_QUERY_BYTES = st.binary(max_size=120)
RAW_LINE_BYTES = st.binary(max_size=80).map(
    lambda raw: raw.replace(b" ", b"").replace(b"\r", b"").replace(b"\n", b""))


def encode(path: str, pairs) -> bytes:
    """The request target a well-behaved client sends: UTF-8, percent-encoded."""
    return (path + "?" + urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)).encode()
