"""Bulbapedia's episode codes, shared by the crawler, the corpus preparation and the demo wiki.

An episode code is a series prefix and a zero-padded number, as in Bulbapedia's
page names: EP001 (original series), AG005 (Advanced Generation), ...
"""
from __future__ import annotations

import re

# The series of the original project, in broadcast order, with their episode counts.
DEFAULT_SERIES: dict[str, int] = {"EP": 274, "AG": 192, "DP": 191, "XY": 140, "SM": 140}

# ASCII digits only: str.isdigit() and \d also take "²" or "٣", which int() refuses or
# which would name a page and a file that no one means.
_CODE = re.compile(r"^([A-Z]+)([0-9]+)$")


class CodeError(ValueError):
    """A series or episode specification that cannot be understood."""


def series_codes(prefix: str, count: int) -> list[str]:
    """EP, 3 -> [EP001, EP002, EP003]."""
    return [f"{prefix}{number:03d}" for number in range(1, count + 1)]


def default_codes() -> list[str]:
    return [code for prefix, count in DEFAULT_SERIES.items() for code in series_codes(prefix, count)]


def parse_series(spec: str) -> list[str]:
    """'EP:274,AG:192' -> every code of those series, in the order given."""
    codes: list[str] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        prefix, sep, count = item.partition(":")
        prefix = prefix.strip().upper()
        if not sep or not re.fullmatch(r"[A-Z]+", prefix) or not re.fullmatch(r"[0-9]+", count.strip()):
            raise CodeError(f"bad series {item!r}: expected PREFIX:COUNT, e.g. EP:274")
        codes.extend(series_codes(prefix, int(count)))
    if not codes:
        raise CodeError(f"no series in {spec!r}")
    return codes


def parse_episode_list(spec: str) -> list[str]:
    """'EP001, ag005' -> [EP001, AG005]; duplicates removed, order kept."""
    codes: list[str] = []
    for item in filter(None, (part.strip().upper() for part in spec.split(","))):
        if not _CODE.match(item):
            raise CodeError(f"bad episode code {item!r}: expected e.g. EP001")
        if item not in codes:
            codes.append(item)
    if not codes:
        raise CodeError(f"no episode codes in {spec!r}")
    return codes


def episode_sort_key(code: str) -> tuple[int, str, int, str]:
    """Broadcast order: known series first in DEFAULT_SERIES order, then others by name."""
    match = _CODE.match(code)
    if not match:
        return (len(DEFAULT_SERIES) + 1, code, 0, code)
    prefix, number = match.group(1), int(match.group(2))
    order = list(DEFAULT_SERIES).index(prefix) if prefix in DEFAULT_SERIES else len(DEFAULT_SERIES)
    return (order, prefix, number, code)
