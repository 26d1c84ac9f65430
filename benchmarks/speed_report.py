"""The service's speed and memory targets, checked against one run of benchmarks/service_speed.py,
and the table it prints. Works on the run's results as plain data (the same
dict the run can write as JSON)."""
from __future__ import annotations

import math
from typing import Optional

GIB = 2**30
MIB = 2**20

SINGLE_STREAM_VS_GENERATE = 2.5   # x gpt-2-simple generate(), persistent session
AGGREGATE_8_VS_LOOP = 4.0         # x gpt-2-simple's loop built once, batch 1
FIRST_TOKEN_SECONDS = 0.3         # median at 1 concurrent, /stream through nginx
RSS_AT_8_BYTES = 1.2 * GIB        # whole service, highest reading at 8 concurrent
RSS_GROWTH = 0.05                 # across the growth run
STACK_VS_IN_PROCESS = 0.9         # single stream through nginx and uWSGI x the engine alone


def level(results: dict, concurrency: int) -> Optional[dict]:
    return next((lv for lv in results["levels"] if lv["concurrency"] == concurrency), None)


def check_targets(results: dict) -> list[dict]:
    """Each target: its figure, the bound, and met (None when not measured)."""
    anchors = results.get("anchors", {})
    one, eight = level(results, 1), level(results, 8)
    generate = anchors.get("generate", {}).get("tokens_per_second")
    loop_1 = anchors.get("loop", {}).get("batches", {}).get("1", {}).get("tokens_per_second")
    growth = results.get("growth")
    targets = []

    def add(name, value, bound, text, met):
        targets.append({"name": name, "value": value, "bound": bound, "text": text,
                        "met": None if value is None or _nan(value) else met(value)})

    ratio = one["tokens_per_second"] / generate if one and generate else None
    add("single stream vs gpt-2-simple generate()", ratio, SINGLE_STREAM_VS_GENERATE,
        ratio is not None and f"{one['tokens_per_second']:.1f} / {generate:.1f} tok/s = {ratio:.2f}x",
        lambda r: r >= SINGLE_STREAM_VS_GENERATE)
    ratio = eight["tokens_per_second"] / loop_1 if eight and loop_1 else None
    add("8 concurrent aggregate vs loop built once, batch 1", ratio, AGGREGATE_8_VS_LOOP,
        ratio is not None and f"{eight['tokens_per_second']:.1f} / {loop_1:.1f} tok/s = {ratio:.2f}x",
        lambda r: r >= AGGREGATE_8_VS_LOOP)
    alone = anchors.get("in-process", {}).get("tokens_per_second")
    ratio = one["tokens_per_second"] / alone if one and alone else None
    add("single stream through the stack vs the engine in-process", ratio, STACK_VS_IN_PROCESS,
        ratio is not None and f"{one['tokens_per_second']:.1f} / {alone:.1f} tok/s = {ratio:.2f}x",
        lambda r: r >= STACK_VS_IN_PROCESS)
    first = one["first_token"]["p50"] if one else None
    add("time to first token, 1 concurrent (median)", first, FIRST_TOKEN_SECONDS,
        first is not None and f"{first:.3f} s", lambda s: s <= FIRST_TOKEN_SECONDS)
    # Both the level run and the growth run (when it is at 8) count.
    peaks = [eight["rss_peak"]] if eight else []
    if growth and growth["concurrency"] == 8:
        peaks.append(growth["rss_peak"])
    rss = max(peaks) if peaks else None
    add("whole-service RSS at 8 concurrent (peak)", rss, RSS_AT_8_BYTES,
        rss is not None and f"{rss / GIB:.3f} GiB ({rss / MIB:.0f} MiB)", lambda b: b <= RSS_AT_8_BYTES)
    change = growth["rss_change"] if growth else None
    add(f"RSS growth across {growth['requests'] if growth else '?'} requests", change, RSS_GROWTH,
        change is not None and f"{change:+.1%}", lambda c: c < RSS_GROWTH)
    return targets


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _bound_text(target: dict) -> str:
    bound, name = target["bound"], target["name"]
    if name.startswith(("single", "8 concurrent")):
        return f">= {bound:g}x"
    if name.startswith("time"):
        return f"<= {bound:g} s"
    if name.startswith("whole"):
        return f"<= {bound / GIB:g} GiB"
    return f"< {bound:.0%}"


def _verdict(met: Optional[bool]) -> str:
    return {True: "met", False: "NOT MET", None: "not measured"}[met]


def format_report(results: dict) -> str:
    machine, settings = results["machine"], results["settings"]
    lines = [
        f"pokegen service speed: {settings['model']}, {settings['length']}-token episodes, "
        f"nginx -> uWSGI -> engine with GENERATION_CONCURRENCY={settings['generation_concurrency']}",
        f"machine: {machine['cores']} cores ({machine['cpu']}); load average (1/5/15 min) at start "
        f"{_load(machine['load_start'])}, at end {_load(machine['load_end'])}",
        "CPU used by other processes meanwhile (cores, on average): " + ", ".join(
            f"{phase} {cores:.2f}" for phase, cores in machine["other_cores"].items()),
        f"service RSS idle after loading: {results['idle_rss'] / MIB:.0f} MiB "
        f"({_by_name(results['idle_by_name'])})",
        "",
        _row(COLUMNS),
    ]
    for lv in results["levels"]:
        lat, first = lv["latency"], lv["first_token"]
        lines.append(_row([str(lv["concurrency"]), str(lv["requests"]),
                           f"{lv['tokens_per_second']:.1f}", f"{lat['p50']:.2f} s",
                           f"{lat['p95']:.2f} s", f"{first['p50']:.3f} s", f"{first['p95']:.3f} s",
                           f"{lv['rss_peak'] / MIB:.0f} MiB"]))
    lines.append("(each request: GET /stream through nginx, its own fixed seed; latency to the "
                 "final event, 1st token to the first piece event; RSS: uWSGI + nginx)")
    lines += _problems(results)
    growth = results.get("growth")
    if growth:
        lines += ["", f"growth: {growth['requests']} requests of {growth['length']} tokens at "
                      f"{growth['concurrency']} concurrent (GET /): {growth['tokens_per_second']:.1f} "
                      f"tok/s, latency p50 {growth['latency']['p50']:.2f} s, p95 "
                      f"{growth['latency']['p95']:.2f} s",
                  f"  service RSS {growth['rss_start'] / GIB:.3f} GiB before -> "
                  f"{growth['rss_end'] / GIB:.3f} GiB after ({growth['rss_change']:+.2%}), peak "
                  f"{growth['rss_peak'] / GIB:.3f} GiB; engine graph ops {growth['graph_ops_before']} "
                  f"-> {growth['graph_ops_after']}"]
    lines += ["", "anchors: gpt-2-simple on the same checkpoint, same sampling, "
                  f"{settings['anchor_length']} tokens, each in its own process"]
    lines += _anchor_lines(results.get("anchors", {}))
    lines += ["", "targets:"]
    for target in results["targets"]:
        lines.append(f"  {target['name']:<52} {target['text'] or '-':<28} "
                     f"{_bound_text(target):<10} {_verdict(target['met'])}")
    lines += ["", f"rerun: {results['command']}"]
    return "\n".join(lines)


COLUMNS = ["concurrent", "requests", "tokens/s", "latency p50", "latency p95",
           "1st token p50", "1st token p95", "RSS peak"]


def _row(cells: list[str]) -> str:
    return "  ".join(cell.rjust(len(name)) for cell, name in zip(cells, COLUMNS))


def _load(values) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _by_name(by_name: dict) -> str:
    return ", ".join(f"{name} {rss / MIB:.0f} MiB" for name, rss in sorted(by_name.items()))


def _problems(results: dict) -> list[str]:
    lines = []
    for lv in results["levels"]:
        if lv["failed"]:
            lines.append(f"  at {lv['concurrency']} concurrent {lv['failed']} requests failed, "
                         f"e.g. {lv['first_error']}")
        if lv["short"]:
            lines.append(f"  at {lv['concurrency']} concurrent {lv['short']} episodes ended early "
                         f"(end-of-text): counted in tokens/s, left out of latency")
    growth = results.get("growth")
    if growth and (growth["failed"] or growth["short"]):
        lines.append(f"  growth run: {growth['failed']} failed, {growth['short']} ended early")
    return lines


def _anchor_lines(anchors: dict) -> list[str]:
    lines = []
    generate = anchors.get("generate")
    if generate:
        per_call = ", ".join(f"{c['tokens_per_second']:.1f}" for c in generate["calls"])
        lines.append(f"  generate(), persistent session: {generate['tokens_per_second']:.1f} tok/s "
                     f"(calls: {per_call}; first not counted); graph grows "
                     f"{generate['graph_ops_per_call']:.0f} ops per call; RSS "
                     f"{generate['rss_mib']:.0f} MiB")
    loop = anchors.get("loop")
    if loop:
        rates = "; ".join(f"batch {b}: {r['tokens_per_second']:.1f} tok/s"
                          for b, r in loop["batches"].items())
        lines.append(f"  sampling loop built once: {rates} (aggregate; first run not counted); "
                     f"RSS {loop['rss_mib']:.0f} MiB")
    per_request = anchors.get("per-request")
    if per_request:
        loads = sorted(r["load_seconds"] for r in per_request["requests"])
        rss = max(r["rss_mib"] for r in per_request["requests"])
        lines.append(f"  per-request load + generate: {per_request['seconds_per_request']:.1f} s "
                     f"per request (load_gpt2 {loads[len(loads) // 2]:.1f} s), "
                     f"{per_request['tokens_per_second']:.1f} tok/s; RSS {rss:.0f} MiB "
                     f"while one request runs")
    alone = anchors.get("in-process")
    if alone:
        lines.append(f"  the engine in-process, one stream: {alone['tokens_per_second']:.1f} tok/s")
    for name, error in anchors.get("errors", {}).items():
        lines.append(f"  {name}: failed: {error}")
    return lines or ["  (not run)"]
