"""The synthetic demo data: generator, local wiki (as a library and as a
command), and the offline build that `make demo-data` runs."""
from __future__ import annotations

import html
import json
import signal
import subprocess
import sys

import pytest
import requests

from demo.local_wiki import LocalWiki
from demo.synthetic_episodes import (
    SYNTHETIC_NOTICE,
    generate_episode,
    generate_episodes,
    plain_text,
)
from pokegen.episode_codes import default_codes, parse_episode_list, parse_series
from pokegen.service_stack import ROOT
from signals import interruptible



def test_default_codes_are_the_original_series():
    codes = default_codes()
    assert len(codes) == 274 + 192 + 191 + 140 + 140
    assert codes[:2] == ["EP001", "EP002"] and codes[-1] == "SM140"
    assert parse_series("EP:2, ag:1") == ["EP001", "EP002", "AG001"]
    assert parse_episode_list("ep001, AG005,EP001") == ["EP001", "AG005"]


def test_generator_covers_every_default_code_with_varied_synthetic_text():
    episodes = generate_episodes(default_codes())
    assert len(episodes) >= 300
    assert [e.code for e in episodes] == default_codes()
    assert all(e.synthetic for e in episodes)
    texts = [" ".join(plain_text(p) for p in e.paragraphs) for e in episodes]
    assert len(set(texts)) == len(texts)
    openings = {plain_text(e.paragraphs[0]).split(".")[0] for e in episodes}
    assert len(openings) > 100
    assert len({e.title for e in episodes}) > 300
    assert all(150 <= len(t.split()) <= 600 for t in texts)
    # Each series has its own cast.
    assert "Misty" in " ".join(texts[:274]) and "Serena" in " ".join(texts[657:797])


def test_generator_is_deterministic_per_seed():
    assert generate_episode("AG010") == generate_episode("AG010")
    assert generate_episode("AG010", seed=1) != generate_episode("AG010", seed=0)


def test_links_render_as_their_label():
    assert plain_text("[[Ash]] uses [[Iron Tail (move)|Iron Tail]].") == "Ash uses Iron Tail."


def test_local_wiki_pages_404_and_fault_validation():
    episodes = {e.code: e for e in generate_episodes(["EP001"])}
    with pytest.raises(ValueError, match="unknown fault"):
        LocalWiki(episodes, faults={"EP001": "explode"})
    with LocalWiki(episodes) as wiki:
        page = requests.get(wiki.url + "EP001", timeout=5)
        missing = requests.get(wiki.url + "EP002", timeout=5)
        main = requests.get(wiki.url, timeout=5)
    assert page.status_code == 200 and SYNTHETIC_NOTICE in html.unescape(page.text)
    assert page.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert missing.status_code == 404 and "There is currently no text in this page" in missing.text
    assert main.status_code == 200 and 'href="/wiki/EP001"' in main.text


@pytest.mark.e2e
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_local_wiki_command_serves_and_stops_on_a_signal(stop_signal):
    process = subprocess.Popen([sys.executable, "-m", "demo.local_wiki", "--port", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving 937 synthetic episodes at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0]
        assert requests.get(url + "SM140", timeout=5).status_code == 200
        assert requests.get(url + "SM141", timeout=5).status_code == 404
    finally:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0 and "Traceback" not in stderr


@pytest.mark.e2e
def test_offline_build_crawls_the_local_wiki_and_prepares_the_corpus(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "demo.build_demo_data", "--series", "EP:12,DP:8",
         "--episodes-file", str(tmp_path / "episodes.jsonl"), "--corpus", str(tmp_path / "corpus"),
         "--out", str(tmp_path / "train.txt")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "saved 20, skipped 0 (already saved), missing 0, no plot 0, failed 0" in result.stdout
    train = (tmp_path / "train.txt").read_text(encoding="utf-8")
    val = (tmp_path / "val.txt").read_text(encoding="utf-8")
    assert train.count("<|endoftext|>\n") + val.count("<|endoftext|>\n") == 20
    assert val.count("<|endoftext|>\n") == 1
    records = [json.loads(line) for line in
               (tmp_path / "corpus" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["status"] for r in records} == {"saved"} and len(records) == 20
    assert records[0]["url"].startswith("http://127.0.0.1:")
    assert "[demo-data] done" in result.stdout
