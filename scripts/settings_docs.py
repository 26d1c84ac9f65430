"""Writes the README's table of settings from app/config.py's SETTINGS, between
its two markers (`make settings-docs`). With --check it changes nothing and exits
1 when the table is out of date.

Usage: python scripts/settings_docs.py [--check] [--readme README.md]
"""
import argparse
import os
import sys

from app.config import SETTINGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BEGIN = "<!-- settings table: made by `make settings-docs` from app/config.py's SETTINGS -->"
END = "<!-- end of settings table -->"


def settings_table() -> str:
    rows = ["| name | default | range | read by | what |", "| --- | --- | --- | --- | --- |"]
    for setting in SETTINGS.values():
        default = f"`{setting.default}`" if setting.default else "none"
        rows.append(f"| `{setting.name}` | {default} | {setting.bounds()} | "
                    f"{', '.join(setting.readers)} | {setting.what} |")
    return "\n".join(rows)


def with_table(text: str) -> str:
    """`text` with the table between its markers replaced by the current one."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the README must hold the markers {BEGIN!r} and {END!r} once each, "
                         "in that order")
    before, rest = text.split(BEGIN)
    after = rest.split(END)[1]
    return f"{before}{BEGIN}\n{settings_table()}\n{END}{after}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when the table is out of date")
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    args = parser.parse_args()
    with open(args.readme, encoding="utf-8") as f:
        text = f.read()
    try:
        updated = with_table(text)
    except ValueError as error:
        print(f"error: {args.readme}: {error}", file=sys.stderr)
        return 1
    if updated == text:
        return 0
    if args.check:
        print(f"error: the settings table in {args.readme} is out of date: "
              "run make settings-docs", file=sys.stderr)
        return 1
    with open(args.readme + ".tmp", "w", encoding="utf-8") as f:
        f.write(updated)
    os.replace(args.readme + ".tmp", args.readme)
    print(f"updated the settings table in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
