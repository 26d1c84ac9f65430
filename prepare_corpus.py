"""Clean the crawled episode plots and merge them into GPT-2 training files.

    python prepare_corpus.py                      # data/pokeCorpusBulba -> data/train.txt + data/val.txt
    python prepare_corpus.py --val-fraction 0     # everything in train.txt (an old val.txt goes)

A corpus is not replaced by one with fewer than half its episodes (a crawl cut
short) unless --force is given.

Each episode is followed by a `<|endoftext|>` line, gpt-2-simple's document
delimiter. Order and split are deterministic: episodes are written in broadcast
order, and the validation episodes are chosen by a hash of their code (not by
position or chance), so the same input always gives the same files. Case and punctuation are kept as written
(GPT-2's byte-level tokenizer handles natural text best); `--lowercase`
reproduces the original project's cleaning instead.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pokegen.atomic_files import atomic_write_text
from pokegen.episode_codes import episode_sort_key
from pokegen.gpt2_format import END_OF_TEXT

DEFAULT_IN = Path("data/pokeCorpusBulba")
DEFAULT_OUT = Path("data/train.txt")
MIN_WORDS = 30   # shorter "plots" are stubs ("This episode has no summary yet.")

TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-",
    "\u2014": " - ", "\u2015": " - ",
    "\u2026": "...",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u3000": " ",
    "\u00ad": None, "\u200b": None, "\u200c": None, "\u200d": None, "\ufeff": None,
    "\ufffd": None,   # an undecodable byte: nothing worth keeping
})
# Wiki leftovers: [edit], reference marks [1] [a] [note 2], [citation needed].
WIKI_MARKS = re.compile(r"\s*\[\s*(?:edit|\d+|[a-z]|note \d+|citation needed|clarification needed)\s*\]",
                        re.IGNORECASE)
# Sentences of notice banners and hatnotes that can slip into a plot.
NOTICE_SENTENCES = re.compile(
    r"(?:This (?:article|section|page) (?:does not yet meet|is incomplete|is about|needs|"
    r"may contain|contains? (?:spoilers|information))"
    r"|Please (?:feel free to |help )?(?:edit|expand|improve)"
    r"|For (?:other uses|the [^.]{0,80}), see)"
    r"[^.!?]*[.!?]")


@dataclass
class CorpusStats:
    episodes: int = 0
    characters: int = 0
    words: int = 0

    @classmethod
    def of(cls, texts: list[str]) -> "CorpusStats":
        return cls(len(texts), sum(len(t) for t in texts), sum(len(t.split()) for t in texts))

    def line(self) -> str:
        return f"{self.episodes} episodes, {self.characters:,} characters, {self.words:,} words"


class CorpusError(Exception):
    """Input that cannot make a corpus."""


def clean_episode(text: str, lowercase: bool = False) -> str:
    """One episode's plot as clean paragraphs separated by a blank line."""
    text = unicodedata.normalize("NFC", text).translate(TYPOGRAPHY)
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        block = WIKI_MARKS.sub("", block)
        block = NOTICE_SENTENCES.sub("", block)
        block = " ".join(block.split())
        if lowercase:
            block = article_style(block)
        if block:
            paragraphs.append(block)
    return "\n\n".join(paragraphs)


def article_style(text: str) -> str:
    """The original project's cleaning: lower case, punctuation split from words."""
    text = re.sub(r"([.,!?;:()\"])", r" \1 ", text.lower())
    return " ".join(text.split())


def read_episodes(in_dir: Path) -> dict[str, str]:
    if not in_dir.is_dir():
        raise CorpusError(f"input folder {in_dir} does not exist (run crawler_bulbapedia.py first)")
    files = sorted(in_dir.glob("*.txt"), key=lambda p: episode_sort_key(p.stem))
    if not files:
        raise CorpusError(f"no episode files (*.txt) in {in_dir}")
    episodes = {}
    for path in files:
        try:
            episodes[path.stem] = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise CorpusError(f"cannot read {path}: {exc.strerror}") from None
    return episodes


def build_corpus(raw: dict[str, str], lowercase: bool = False,
                 min_words: int = MIN_WORDS) -> tuple[dict[str, str], dict[str, int]]:
    """Clean every episode; drop stubs and exact duplicates (the first one stays)."""
    kept: dict[str, str] = {}
    seen: set[str] = set()
    dropped = {"too short": 0, "duplicate": 0}
    for code, text in raw.items():
        cleaned = clean_episode(text, lowercase)
        if len(cleaned.split()) < min_words:
            dropped["too short"] += 1
            continue
        if cleaned in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(cleaned)
        kept[code] = cleaned
    return kept, dropped


def split_validation(codes: list[str], fraction: float) -> set[str]:
    """The round(fraction * n) codes with the smallest hashes (at least one when
    fraction > 0 and there are two or more episodes)."""
    if fraction <= 0 or len(codes) < 2:
        return set()
    count = min(len(codes) - 1, max(1, round(fraction * len(codes))))
    ranked = sorted(codes, key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    return set(ranked[:count])


def format_corpus(texts: list[str]) -> str:
    return "".join(f"{text}\n{END_OF_TEXT}\n" for text in texts)


def episodes_in(path: Path) -> int:
    """Episodes in a corpus file written here (0 when there is none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if line.rstrip("\n") == END_OF_TEXT)
    except FileNotFoundError:
        return 0


def prepare(in_dir: Path, out: Path, val_out: Path, val_fraction: float,
            lowercase: bool = False, min_words: int = MIN_WORDS, force: bool = False) -> dict:
    """Writes `out` and, when val_fraction > 0, `val_out`; with val_fraction 0
    a `val_out` left by an earlier run is removed (train.py would read it)."""
    raw = read_episodes(in_dir)
    kept, dropped = build_corpus(raw, lowercase, min_words)
    if not kept:
        raise CorpusError(f"all {len(raw)} episodes in {in_dir} were empty or too short")
    # A crawl cut short (a blocked crawler, a wrong --in) must not quietly
    # replace a full corpus: fewer than half the episodes needs --force.
    before = episodes_in(out) + episodes_in(val_out)
    if not force and len(kept) < before / 2:
        raise CorpusError(f"{in_dir} gives {len(kept)} episodes, under half of the {before} in "
                          f"{out} now; check the crawl, or pass --force to replace it")
    validation = split_validation(list(kept), val_fraction)
    train = [text for code, text in kept.items() if code not in validation]
    val = [text for code, text in kept.items() if code in validation]
    atomic_write_text(out, format_corpus(train))
    if val_fraction > 0:
        atomic_write_text(val_out, format_corpus(val))
    else:
        val_out.unlink(missing_ok=True)
    return {"read": len(raw), "dropped": dropped, "train": CorpusStats.of(train),
            "val": CorpusStats.of(val)}


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be at least 0 and below 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Clean the crawled episode plots and write train/validation text files "
                    f"for gpt-2-simple, episodes separated by {END_OF_TEXT} lines.")
    parser.add_argument("--in", dest="in_dir", type=Path, default=DEFAULT_IN,
                        help="folder of <CODE>.txt plots (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="training file (default: %(default)s)")
    parser.add_argument("--val-out", type=Path,
                        help="validation file (default: val.txt next to --out)")
    parser.add_argument("--val-fraction", type=fraction, default=0.05,
                        help="share of episodes held out for validation; 0 writes no "
                             "validation file and removes an earlier one (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="replace the corpus even with fewer than half its episodes")
    parser.add_argument("--min-words", type=int, default=MIN_WORDS,
                        help="drop episodes shorter than this (default: %(default)s)")
    parser.add_argument("--lowercase", action="store_true",
                        help="the original project's cleaning: lower case, punctuation "
                             "split from words")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    val_out = args.val_out or args.out.with_name("val.txt")
    if val_out.resolve() == args.out.resolve():
        print("error: --val-out must differ from --out", file=sys.stderr)
        return 2
    try:
        result = prepare(args.in_dir, args.out, val_out, args.val_fraction, args.lowercase,
                         args.min_words, args.force)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {exc.filename or args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    dropped = result["dropped"]
    print(f"read {result['read']} episodes from {args.in_dir}; dropped {dropped['too short']} "
          f"too short, {dropped['duplicate']} duplicates")
    print(f"train: {result['train'].line()} -> {args.out}")
    if args.val_fraction > 0:
        print(f"val:   {result['val'].line()} -> {val_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
