"""benchmarks/service_speed.py end to end in its --quick form, on a tiny model
it builds itself: the real stack, gpt-2-simple's three anchors and the engine alone in
their own processes, every figure and target present. No timing is asserted: speed
targets are read from the full run (make bench, docs/benchmarks.md)."""
import json
import os
import subprocess
import sys

import pytest

from pokegen.service_stack import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEVELS = (1, 3, 8, 16)
QUICK_LENGTH = 24


def test_quick_run_measures_everything(tmp_path):
    checkpoint_dir, results_path = tmp_path / "bench-model", tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "service_speed.py"), "--quick",
         "--checkpoint-dir", str(checkpoint_dir), "--preset", "tiny", "--json", str(results_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert (checkpoint_dir / "run1" / "checkpoint").is_file()
    results = json.loads(results_path.read_text())

    assert [lv["concurrency"] for lv in results["levels"]] == list(LEVELS)
    for lv in results["levels"]:
        assert lv["failed"] == 0 and lv["requests"] == 2 * lv["concurrency"]
        assert all(0 <= tokens <= QUICK_LENGTH for tokens in lv["tokens"]) and sum(lv["tokens"]) > 0
        assert lv["tokens_per_second"] > 0
        # Streaming: the first piece arrives before the episode's last event.
        assert 0 < lv["first_token"]["p50"] < lv["latency"]["p50"]
        assert lv["rss_peak"] > 100 * 2**20  # the worker holds TensorFlow and the model

    growth = results["growth"]
    assert growth["requests"] == 16 and growth["failed"] == 0 and growth["concurrency"] == 8
    # The service's default int8 decoder runs no TensorFlow graph that could grow.
    assert growth["graph_ops_before"] == growth["graph_ops_after"] == 0
    assert growth["rss_end"] > 0 and growth["rss_start"] > 0

    anchors = results["anchors"]
    assert "errors" not in anchors
    assert len(anchors["generate"]["calls"]) == 2
    assert anchors["generate"]["graph_ops_per_call"] > 100  # generate() grows the graph
    assert anchors["loop"]["batches"]["1"]["graph_ops_added_by_runs"] == 0
    assert anchors["loop"]["batches"]["1"]["runs"][0]["tokens"] == QUICK_LENGTH
    assert len(anchors["per-request"]["requests"]) == 1
    assert anchors["per-request"]["requests"][0]["load_seconds"] > 0

    assert anchors["in-process"]["tokens_per_second"] > 0  # the engine alone, same model
    assert len(results["targets"]) == 6
    assert all(target["met"] in (True, False) for target in results["targets"])
    report = done.stdout
    for target in results["targets"]:
        line = next(line for line in report.splitlines() if target["name"] in line)
        assert line.rstrip().endswith("met" if target["met"] else "NOT MET")
    assert "rerun: " in report and "benchmarks/service_speed.py --quick" in report
