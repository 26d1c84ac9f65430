"""Build the offline demo corpus end to end (what `make demo-data` runs):

1. generate the SYNTHETIC episodes (build/demo-wiki/episodes.jsonl);
2. serve them with the local wiki on a free 127.0.0.1 port;
3. run the real crawler, unchanged, against it (default episode codes);
4. stop the wiki;
5. run prepare_corpus.py: data/demo/train.txt and data/demo/val.txt.

Everything goes under data/demo/ so that it never mixes with, or overwrites, a
real Bulbapedia crawl (data/pokeCorpusBulba) or its prepared data/train.txt.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from demo.local_wiki import LocalWiki
from demo.synthetic_episodes import generate_episodes, load_episodes, save_episodes
from pokegen.episode_codes import CodeError, default_codes, parse_series

ROOT = Path(__file__).resolve().parent.parent


def run(step: str, command: list[str]) -> None:
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"error: {step} failed (exit {result.returncode}): {' '.join(command)}")
    print(f"[demo-data] {step} took {time.monotonic() - started:.1f} s", flush=True)


def build(episodes_file: Path, corpus_dir: Path, train: Path, delay: float,
          series: str | None = None) -> None:
    started = time.monotonic()
    codes = parse_series(series) if series else default_codes()
    save_episodes(generate_episodes(codes), episodes_file)
    episodes = load_episodes(episodes_file)
    print(f"[demo-data] generated {len(episodes)} synthetic episodes -> {episodes_file}", flush=True)

    with LocalWiki(episodes, markup="mixed", features="varied") as wiki:
        print(f"[demo-data] local wiki serving at {wiki.url}", flush=True)
        # --force: the demo corpus always matches the generator's current output.
        crawl = [sys.executable, "crawler_bulbapedia.py", "--base-url", wiki.url,
                 "--out", str(corpus_dir), "--delay", str(delay), "--force",
                 "--timeout", "10", "--backoff", "0.1"]
        run("crawl", crawl + (["--series", series] if series else []))
    print("[demo-data] local wiki stopped", flush=True)

    run("prepare", [sys.executable, "prepare_corpus.py", "--in", str(corpus_dir),
                    "--out", str(train)])
    print(f"[demo-data] done in {time.monotonic() - started:.1f} s: {train} "
          f"(+ {train.with_name('val.txt')})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the synthetic demo wiki, crawl it on 127.0.0.1 and prepare "
                    "data/demo/train.txt + data/demo/val.txt, offline.")
    parser.add_argument("--episodes-file", type=Path, default=Path("build/demo-wiki/episodes.jsonl"))
    parser.add_argument("--corpus", type=Path, default=Path("data/demo/pokeCorpus"),
                        help="crawl output folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("data/demo/train.txt"),
                        help="training file; val.txt is written next to it (default: %(default)s)")
    parser.add_argument("--delay", type=float, default=0.005,
                        help="seconds between requests to the local wiki (default: %(default)s)")
    parser.add_argument("--series", help="PREFIX:COUNT list for a smaller demo "
                                         "(default: the crawler's default codes)")
    args = parser.parse_args(argv)
    if args.series:
        try:
            parse_series(args.series)
        except CodeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    os.chdir(ROOT)   # relative paths are the repository's, wherever this is started
    build(args.episodes_file, args.corpus, args.out, args.delay, args.series)
    return 0


if __name__ == "__main__":
    sys.exit(main())
