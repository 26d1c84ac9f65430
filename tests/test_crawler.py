"""The crawler, unchanged, against the local demo wiki on 127.0.0.1: plot
extraction in both markups, every excluded element, faults, resume, and the
command line (unreachable wiki, Ctrl-C)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from bs4 import BeautifulSoup

import crawler_bulbapedia as crawler
from demo.local_wiki import LocalWiki
from demo.synthetic_episodes import generate_episodes
from demo.wiki_markup import (
    DUPLICATE_PLOT_TEXT,
    MARKUPS,
    PageFeatures,
    excluded_snippets,
    expected_plot_text,
    render_episode_page,
)
from pokegen import atomic_files
from pokegen.service_stack import ROOT, free_port, wait_for
from signals import interruptible

CODES = [f"EP{n:03d}" for n in range(1, 9)]
# Small timeouts and backoff keep the fault tests fast; the defaults are polite.
FAST = dict(timeout=1.0, retries=2, backoff=0.01, max_bytes=1 * 2**20)


@pytest.fixture(scope="module")
def episodes():
    return {e.code: e for e in generate_episodes(CODES)}


def crawl(wiki, codes, out, **overrides):
    settings = crawler.FetchSettings(**{**FAST, **overrides.pop("settings", {})})
    return crawler.crawl(codes, out, wiki.url, delay=overrides.pop("delay", 0),
                         settings=settings, progress=False, **overrides)


def manifest(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {record["code"]: record for record in map(json.loads, lines)}


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- extraction

@pytest.mark.parametrize("markup", MARKUPS)
def test_saves_exactly_the_plot_and_none_of_the_page_furniture(tmp_path, episodes, markup):
    codes = CODES[:3]
    with LocalWiki(episodes, markup=markup, features="all") as wiki:
        summary = crawl(wiki, codes, tmp_path)
        pages = {c: requests.get(wiki.url + c, timeout=5).text for c in codes}
    assert (summary.saved, summary.failed) == (3, 0)
    for code in codes:
        saved = (tmp_path / f"{code}.txt").read_text(encoding="utf-8")
        assert saved == expected_plot_text(episodes[code])
        page_text = BeautifulSoup(pages[code], "lxml").get_text()
        for name, snippet in excluded_snippets(episodes[code], PageFeatures()).items():
            assert snippet in page_text, f"{name} is not on the page: the test proves nothing"
            assert snippet not in saved, f"{name} leaked into the saved plot"


@pytest.mark.parametrize("markup", MARKUPS)
def test_page_markup_is_the_one_requested(episodes, markup):
    soup = BeautifulSoup(render_episode_page(episodes["EP001"], markup), "lxml")
    legacy_heading = soup.select_one("h2 > span.mw-headline#Episode_plot")
    modern_heading = soup.select_one("div.mw-heading.mw-heading2 > h2#Episode_plot")
    assert (legacy_heading is not None, modern_heading is not None) == (markup == "legacy",
                                                                        markup == "modern")


@pytest.mark.parametrize("markup", MARKUPS)
def test_plain_page_without_toc_or_furniture(episodes, markup):
    bare = PageFeatures(**{name: False for name in vars(PageFeatures())
                           if isinstance(getattr(PageFeatures(), name), bool)})
    html = render_episode_page(episodes["EP002"], markup, bare)
    assert 'id="toc"' not in html
    paragraphs = crawler.plot_paragraphs(html)
    assert "\n\n".join(paragraphs) + "\n" == expected_plot_text(episodes["EP002"])


@pytest.mark.parametrize("markup", MARKUPS)
def test_plot_heading_fallback_and_missing_plot(episodes, markup):
    plot = render_episode_page(episodes["EP003"], markup, PageFeatures(plot_title="Plot"))
    assert "\n\n".join(crawler.plot_paragraphs(plot)) + "\n" == expected_plot_text(episodes["EP003"])
    none = render_episode_page(episodes["EP003"], markup, PageFeatures(plot_title=""))
    assert crawler.plot_paragraphs(none) is None


@pytest.mark.parametrize("markup", MARKUPS)
def test_two_plot_headings_keep_the_first_section_only(episodes, markup):
    html = render_episode_page(episodes["EP004"], markup, PageFeatures(duplicate_plot=True))
    assert html.count('id="Episode_plot"') == 2
    text = "\n\n".join(crawler.plot_paragraphs(html)) + "\n"
    assert text == expected_plot_text(episodes["EP004"])
    assert DUPLICATE_PLOT_TEXT not in text


def test_heading_found_by_title_not_position():
    html = """<html><body><div class="mw-parser-output">
    <p>Lead paragraph.</p>
    <h2><span class="mw-headline" id="Synopsis">Synopsis</span></h2><p>Not the plot.</p>
    <div class="mw-heading mw-heading2"><h2 id="Summary_1">Episode plot</h2>
      <span class="mw-editsection">[<a href="#">edit</a>]</span></div>
    <p>First <a href="/wiki/Pikachu">Pikachu</a>   paragraph.<br>Same one.</p>
    <blockquote><p>"A quotation," said Ash.</p></blockquote>
    <div class="mw-heading mw-heading3"><h3 id="Sub">Sub</h3></div><p>After the sub-heading.</p>
    <div class="mw-heading mw-heading2"><h2 id="Major_events">Major events</h2></div>
    <p>Not the plot either.</p></div></body></html>"""
    assert crawler.plot_paragraphs(html) == [
        "First Pikachu paragraph. Same one.", '"A quotation," said Ash.', "After the sub-heading."]


def test_parsoid_sections_end_the_plot_at_the_next_section():
    html = """<html><body><div class="mw-parser-output">
    <section><h2 id="Episode_plot">Episode plot</h2><p>Plot one.</p>
      <section><h3 id="Part">Part</h3><p>Plot two.</p></section></section>
    <section><h2 id="Major_events">Major events</h2><p>Events.</p></section>
    </div></body></html>"""
    assert crawler.plot_paragraphs(html) == ["Plot one.", "Plot two."]


# ---------------------------------------------------------------- outcomes and faults

def test_missing_page_is_recorded_and_the_crawl_goes_on(tmp_path, episodes):
    with LocalWiki(episodes) as wiki:
        summary = crawl(wiki, ["EP001", "EP999", "EP002"], tmp_path)
    assert (summary.saved, summary.missing) == (2, 1)
    assert not (tmp_path / "EP999.txt").exists()
    record = manifest(tmp_path)["EP999"]
    assert (record["status"], record["http_status"]) == ("missing", 404)
    assert record["url"].endswith("/wiki/EP999")


def test_page_without_plot_is_recorded_and_skipped(tmp_path, episodes):
    with LocalWiki(episodes, faults={"EP001": "no-plot"}) as wiki:
        summary = crawl(wiki, ["EP001", "EP002"], tmp_path)
    assert (summary.no_plot, summary.saved) == (1, 1)
    assert not (tmp_path / "EP001.txt").exists()
    assert manifest(tmp_path)["EP001"]["status"] == "no_plot"


@pytest.mark.parametrize("fault", ["503-once", "reset-once"])
def test_transient_failures_are_retried(tmp_path, episodes, fault):
    with LocalWiki(episodes, faults={"EP001": fault}) as wiki:
        summary = crawl(wiki, ["EP001"], tmp_path)
        assert wiki.requests_for("EP001") == 2
    assert summary.saved == 1
    assert (tmp_path / "EP001.txt").read_text(encoding="utf-8") == expected_plot_text(episodes["EP001"])
    assert manifest(tmp_path)["EP001"]["retries"] == 1


def test_429_waits_for_retry_after(tmp_path, episodes):
    with LocalWiki(episodes, faults={"EP001": "429-once"}, retry_after=1) as wiki:
        started = time.monotonic()
        summary = crawl(wiki, ["EP001"], tmp_path)
        elapsed = time.monotonic() - started
        assert [outcome for path, outcome in wiki.log] == ["429", "200"]
    assert summary.saved == 1
    assert elapsed >= 1.0, "Retry-After: 1 was not honoured (backoff alone is 0.01 s)"


def test_response_slower_than_timeout_is_retried(tmp_path, episodes):
    with LocalWiki(episodes, faults={"EP001": "slow-once"}, slow_seconds=3) as wiki:
        started = time.monotonic()
        summary = crawl(wiki, ["EP001"], tmp_path, settings={"timeout": 0.5})
        elapsed = time.monotonic() - started
        assert wiki.requests_for("EP001") == 2
    assert summary.saved == 1
    assert elapsed < 2.5, "the crawler waited for the slow answer instead of timing out"


def test_persistent_failures_are_recorded_and_the_crawl_goes_on(tmp_path, episodes):
    faults = {"EP001": "503-always", "EP002": "slow-always"}
    with LocalWiki(episodes, faults=faults, slow_seconds=2) as wiki:
        summary = crawl(wiki, ["EP001", "EP002", "EP003"], tmp_path, settings={"timeout": 0.3})
        assert wiki.requests_for("EP001") == 3    # the first try and 2 retries
    assert (summary.failed, summary.saved) == (2, 1)
    records = manifest(tmp_path)
    assert records["EP001"]["reason"] == "HTTP 503 after 2 retries"
    assert "timed out" in records["EP002"]["reason"]
    assert not (tmp_path / "EP001.txt").exists() and not (tmp_path / "EP002.txt").exists()


@pytest.mark.parametrize("fault", ["truncated", "truncated-unframed", "huge", "endless"])
def test_bad_bodies_fail_without_writing_a_file(tmp_path, episodes, fault):
    with LocalWiki(episodes, faults={"EP001": fault}) as wiki:
        started = time.monotonic()
        summary = crawl(wiki, ["EP001", "EP002"], tmp_path)
        elapsed = time.monotonic() - started
    assert (summary.failed, summary.saved) == (1, 1)
    assert not (tmp_path / "EP001.txt").exists()
    assert leftovers(tmp_path) == []
    assert manifest(tmp_path)["EP001"]["status"] == "failed"
    assert elapsed < 10, "the size cap did not stop the download"


def test_a_body_trickled_under_the_read_timeout_stops_at_the_page_deadline(tmp_path, episodes):
    # One byte every 0.05 s: no read ever waits the 1 s timeout, and the page
    # would take minutes. The 2 s deadline for the whole page ends it.
    with LocalWiki(episodes, faults={"EP001": "trickle"}, slow_seconds=0.5) as wiki:
        outcome = {}
        crawling = threading.Thread(target=lambda: outcome.update(summary=crawl(
            wiki, ["EP001", "EP002"], tmp_path, settings={"page_seconds": 2.0})), daemon=True)
        started = time.monotonic()
        crawling.start()
        crawling.join(timeout=30)
        elapsed = time.monotonic() - started
    assert not crawling.is_alive(), "the page deadline did not stop the trickle"
    assert (outcome["summary"].failed, outcome["summary"].saved) == (1, 1)
    record = manifest(tmp_path)["EP001"]
    assert record["status"] == "failed" and "longer than 2 s" in record["reason"], record
    assert not (tmp_path / "EP001.txt").exists() and leftovers(tmp_path) == []
    assert elapsed < 15


def test_redirects_are_followed_on_the_wiki_only(tmp_path, episodes):
    faults = {"EP001": "redirect-once", "EP002": "offsite-redirect-always"}
    with LocalWiki(episodes, faults=faults) as wiki:
        summary = crawl(wiki, ["EP001", "EP002"], tmp_path)
        requested = [path for path, _ in wiki.log]
    assert (summary.saved, summary.failed) == (1, 1)
    assert (tmp_path / "EP001.txt").exists() and not (tmp_path / "EP002.txt").exists()
    record = manifest(tmp_path)["EP002"]
    assert record["status"] == "failed"
    assert record["reason"] == f"redirect to another site refused: localhost:{wiki.port}"
    # Nothing was asked of the other host (the same server, under another name).
    assert not any(path.startswith("/offsite/") for path in requested), requested


def test_non_utf8_bytes_are_read_as_windows_1252(tmp_path, episodes):
    code = next(c for c, e in episodes.items() if "é" in expected_plot_text(e))
    with LocalWiki(episodes, faults={code: "non-utf8"}) as wiki:
        raw = requests.get(wiki.url + code, timeout=5).content
        crawl(wiki, [code], tmp_path)
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert (tmp_path / f"{code}.txt").read_text(encoding="utf-8") == expected_plot_text(episodes[code])


def test_identifying_user_agent_and_delay(tmp_path, episodes):
    with LocalWiki(episodes) as wiki:
        started = time.monotonic()
        crawl(wiki, CODES[:3], tmp_path, delay=0.3,
              settings={"contact": "https://example.org/pokegen-contact"})
        elapsed = time.monotonic() - started
        agents = wiki.user_agents
    assert agents == {crawler.FetchSettings(contact="https://example.org/pokegen-contact").user_agent}
    assert "https://example.org/pokegen-contact" in next(iter(agents))
    assert elapsed >= 0.6   # two pauses between three requests


# ---------------------------------------------------------------- resume and safety

def test_resume_skips_saved_episodes_unless_forced(tmp_path, episodes):
    with LocalWiki(episodes) as wiki:
        first = crawl(wiki, CODES[:3], tmp_path)
        second = crawl(wiki, CODES[:4], tmp_path)
        assert [wiki.requests_for(c) for c in CODES[:4]] == [1, 1, 1, 1]
        forced = crawl(wiki, CODES[:2], tmp_path, force=True)
        assert [wiki.requests_for(c) for c in CODES[:2]] == [2, 2]
    assert (first.saved, second.saved, second.skipped, forced.saved) == (3, 1, 3, 2)
    records = manifest(tmp_path)
    assert sorted(records) == CODES[:4]
    for code in CODES[:4]:
        assert records[code]["status"] == "saved"
        assert records[code]["chars"] == len(expected_plot_text(episodes[code]))
        assert records[code]["time"].startswith(time.strftime("%Y", time.gmtime()))


def test_interrupted_write_leaves_old_content_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "EP001.txt"
    target.write_text("complete old plot\n", encoding="utf-8")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_files.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_files.atomic_write_text(target, "half of a new plot")
    assert target.read_text(encoding="utf-8") == "complete old plot\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EP001.txt"]


def test_wiki_going_away_mid_crawl_stops_the_crawl(tmp_path, episodes, monkeypatch):
    wiki = LocalWiki(episodes).start()
    fetch_one = crawler.crawl_episode

    def fetch_then_stop_the_wiki(*args, **kwargs):
        result = fetch_one(*args, **kwargs)
        if not wiki.stopped:
            wiki.stop()
        return result

    monkeypatch.setattr(crawler, "crawl_episode", fetch_then_stop_the_wiki)
    with pytest.raises(crawler.CrawlAborted, match="lost connection to .*connection refused"):
        crawl(wiki, CODES, tmp_path)
    records = manifest(tmp_path)
    assert [r["status"] for r in records.values()] == ["saved", "failed", "failed"]
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["EP001.txt"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "crawler_bulbapedia.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_unreachable_base_url_is_one_clear_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/wiki/"
    result = run_cli("--base-url", url, "--episodes", "EP001,EP002", "--out", str(tmp_path),
                     "--retries", "1", "--backoff", "0.01")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: cannot reach {url}: connection refused"]
    assert list(tmp_path.glob("*.txt")) == []


@pytest.mark.parametrize("args, message", [
    (["--series", "EP"], "bad series"),
    (["--episodes", "EP1X"], "bad episode code"),
    (["--series", "EP:\u00b2"], "bad series"),
    (["--series", "EP:\u0663"], "bad series"),
    (["--episodes", "EP\u0661\u0662"], "bad episode code"),
    (["--base-url", "ftp://example.org/wiki/"], "--base-url must be an http(s) URL"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_crawl_keeps_only_complete_files(tmp_path, episodes, stop_signal):
    with LocalWiki(episodes, faults={"EP002": "slow-always"}, slow_seconds=30) as wiki:
        process = subprocess.Popen(
            [sys.executable, "crawler_bulbapedia.py", "--base-url", wiki.url, "--episodes",
             "EP001,EP002,EP003", "--out", str(tmp_path), "--delay", "0", "--timeout", "20"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=interruptible)
        wait_for(lambda: wiki.requests_for("EP002") > 0, timeout=20)
        assert wiki.requests_for("EP002") == 1, "the crawler never reached EP002"
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EP001.txt", "manifest.jsonl"]
    assert (tmp_path / "EP001.txt").read_text(encoding="utf-8") == expected_plot_text(episodes["EP001"])
    assert list(manifest(tmp_path)) == ["EP001"]


def test_help_lists_the_options():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--base-url", "--series", "--episodes", "--out", "--delay", "--force"):
        assert option in result.stdout
    assert os.path.basename(crawler.DEFAULT_OUT) == "pokeCorpusBulba"
