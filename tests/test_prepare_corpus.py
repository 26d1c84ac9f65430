"""prepare_corpus.py: cleaning rules, drops, deterministic split, and a run on a
real crawl of the local demo wiki."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import crawler_bulbapedia as crawler
import prepare_corpus as prep
from demo.local_wiki import LocalWiki
from demo.synthetic_episodes import generate_episodes
from demo.wiki_markup import expected_plot_text
from pokegen.gpt2_format import END_OF_TEXT
from pokegen.service_stack import ROOT

LONG = " ".join(["Ash and Pikachu walk on."] * 10)   # comfortably above MIN_WORDS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "prepare_corpus.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_typography_is_normalised_and_case_kept():
    raw = "Ash\u2019s \u201cbig\u201d day\u2014at last\u2026 Misty\u00a0said \u2013 fine.\ufffd"
    assert prep.clean_episode(raw) == 'Ash\'s "big" day - at last... Misty said - fine.'


def test_wiki_artefacts_and_notice_sentences_are_removed():
    raw = ("This article does not yet meet the quality standards of Bulbapedia. Please feel free "
           "to edit this article to make it conform to Bulbapedia norms and conventions.\n\n"
           "Brock cooks stew [edit] for everyone[1]. Misty laughs[citation needed] and Ash "
           "agrees [a].\n\nThis section is incomplete.")
    assert prep.clean_episode(raw) == "Brock cooks stew for everyone. Misty laughs and Ash agrees."


def test_whitespace_collapses_within_paragraphs_and_paragraphs_stay_apart():
    raw = "  One\tline\nwraps here.  \n \n\n\nSecond    paragraph.\n"
    assert prep.clean_episode(raw) == "One line wraps here.\n\nSecond paragraph."


def test_lowercase_reproduces_the_article_cleaning():
    assert prep.clean_episode('Ash won, "finally"!', lowercase=True) == 'ash won , " finally " !'


def test_stubs_and_exact_duplicates_are_dropped():
    raw = {"EP001": LONG, "EP002": "Too short.", "EP003": LONG.replace("\u2019", "'"),
           "EP004": "\n\n", "EP005": LONG + " Extra."}
    kept, dropped = prep.build_corpus(raw)
    assert list(kept) == ["EP001", "EP005"]
    assert dropped == {"too short": 2, "duplicate": 1}


def test_split_is_deterministic_and_by_code():
    codes = [f"EP{n:03d}" for n in range(1, 101)]
    val = prep.split_validation(codes, 0.05)
    assert len(val) == 5
    assert prep.split_validation(list(reversed(codes)), 0.05) == val
    assert prep.split_validation(codes, 0) == set()
    assert len(prep.split_validation(codes[:3], 0.05)) == 1   # at least one when asked


def test_missing_or_empty_input_is_a_clear_error(tmp_path):
    for folder in (tmp_path / "nowhere", tmp_path):
        result = run_cli("--in", str(folder), "--out", str(tmp_path / "train.txt"))
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "train.txt").exists()


def test_failed_run_leaves_previous_output_untouched(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "EP001.txt").write_text("stub", encoding="utf-8")
    train = tmp_path / "train.txt"
    train.write_text("previous corpus\n", encoding="utf-8")
    result = run_cli("--in", str(tmp_path / "in"), "--out", str(train))
    assert result.returncode == 1 and "too short" in result.stderr
    assert train.read_text(encoding="utf-8") == "previous corpus\n"


def test_prepare_a_real_crawl(tmp_path):
    codes = [f"{s}{n:03d}" for s in ("EP", "AG", "XY") for n in range(1, 9)]
    episodes = {e.code: e for e in generate_episodes(codes)}
    crawled = tmp_path / "pokeCorpusBulba"
    settings = crawler.FetchSettings(timeout=5, retries=1, backoff=0.01)
    with LocalWiki(episodes, markup="mixed", features="varied") as wiki:
        summary = crawler.crawl(codes, crawled, wiki.url, delay=0, settings=settings,
                                progress=False)
    assert summary.saved == len(codes)
    raw = "".join(p.read_text(encoding="utf-8") for p in crawled.glob("*.txt"))
    assert "\u2019" in raw and "\u2014" in raw, "no typography to normalise: pick other codes"

    out = tmp_path / "train.txt"
    result = run_cli("--in", str(crawled), "--out", str(out), "--val-fraction", "0.1")
    assert result.returncode == 0, result.stderr
    assert "train: 22 episodes" in result.stdout and "val:   2 episodes" in result.stdout

    train_docs = out.read_text(encoding="utf-8").split(f"\n{END_OF_TEXT}\n")
    val_docs = (tmp_path / "val.txt").read_text(encoding="utf-8").split(f"\n{END_OF_TEXT}\n")
    assert train_docs[-1] == "" and val_docs[-1] == ""          # every episode is closed
    documents = train_docs[:-1] + val_docs[:-1]
    expected = {prep.clean_episode(expected_plot_text(e)): c for c, e in episodes.items()}
    assert sorted(expected[d] for d in documents) == sorted(codes)
    # Broadcast order in train.txt: EP before AG before XY.
    train_codes = [expected[d] for d in train_docs[:-1]]
    assert train_codes == sorted(train_codes, key=prep.episode_sort_key)
    for artefact in ("\u2019", "\u2014", "\u2026", "[edit]", "[1]", "Synthetic demo page"):
        assert artefact not in out.read_text(encoding="utf-8")

    again = tmp_path / "again.txt"
    run_cli("--in", str(crawled), "--out", str(again), "--val-fraction", "0.1")
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("value", ["1", "-0.1", "abc"])
def test_bad_val_fraction_is_rejected(value, tmp_path):
    result = run_cli("--in", str(tmp_path), "--val-fraction", value)
    assert result.returncode == 2 and "--val-fraction" in result.stderr


def write_plots(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, count + 1):
        (folder / f"EP{n:03d}.txt").write_text(f"Episode {n}. {LONG}", encoding="utf-8")
    return folder


def test_a_corpus_is_not_replaced_by_one_under_half_its_size(tmp_path):
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    assert run_cli("--in", str(write_plots(tmp_path / "full", 20)), "--out", str(train),
                   "--val-fraction", "0.1").returncode == 0
    before = (train.read_bytes(), val.read_bytes())
    short = write_plots(tmp_path / "short", 9)  # 9 of 20: under half
    result = run_cli("--in", str(short), "--out", str(train), "--val-fraction", "0.1")
    assert result.returncode == 1
    assert result.stderr == (f"error: {short} gives 9 episodes, under half of the 20 in {train} "
                             "now; check the crawl, or pass --force to replace it\n")
    assert (train.read_bytes(), val.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "short", "train.txt", "val.txt"]
    # Half is enough, and --force takes any size.
    assert run_cli("--in", str(write_plots(tmp_path / "half", 10)), "--out", str(train),
                   "--val-fraction", "0.1").returncode == 0
    assert run_cli("--in", str(write_plots(tmp_path / "one", 1)), "--out", str(train),
                   "--val-fraction", "0", "--force").returncode == 0
    assert prep.episodes_in(train) == 1


def test_no_validation_share_removes_an_earlier_validation_file(tmp_path):
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    plots = write_plots(tmp_path / "in", 20)
    assert run_cli("--in", str(plots), "--out", str(train)).returncode == 0
    assert val.exists()
    result = run_cli("--in", str(plots), "--out", str(train), "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    # train.py reads data/val.txt whenever it exists: a stale one must not stay.
    assert not val.exists() and prep.episodes_in(train) == 20
