"""Measures the running compose stack's memory at idle and under concurrent generations.

Reads the memory cgroup of every container of the compose project while it is idle, while
CONCURRENCY generations of LENGTH tokens run at once through nginx, and after they finish: the
usage `docker stats` shows (what the memory limit counts) and the anonymous memory within it.
Prints one table; changes nothing. Reads /proc and /sys/fs/cgroup: run it as root.

Usage: python3 benchmarks/stack_memory.py [--url http://127.0.0.1:5000]
           [--project pokegen] [--concurrency 3] [--length 256] [--idle-seconds 10]
"""
import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request


class ContainerMemory:
    """One container's memory from its cgroup (v1 or v2), as two figures:
    usage: what `docker stats` shows and the memory limit counts (page cache of files in active
           use included, such as the checkpoint just read);
    anon:  anonymous memory (the processes' own heap: weights, graph, caches), which the kernel
           cannot reclaim."""

    def __init__(self, name: str):
        self.name = name
        pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name],
                             capture_output=True, text=True, check=True).stdout.strip()
        with open(f"/proc/{pid}/cgroup") as f:
            lines = [line.strip().split(":", 2) for line in f]
        v1 = [path for _, controllers, path in lines if "memory" in controllers.split(",")]
        if v1:
            self.folder, self.v2 = "/sys/fs/cgroup/memory" + v1[0], False
        else:
            self.folder, self.v2 = "/sys/fs/cgroup" + lines[0][2], True

    def _read(self, name: str) -> str:
        with open(f"{self.folder}/{name}") as f:
            return f.read()

    def sample(self) -> tuple[float, float]:
        stat = dict(line.split() for line in self._read("memory.stat").splitlines())
        if self.v2:
            usage = int(self._read("memory.current")) - int(stat["inactive_file"])
            return float(usage), float(stat["anon"])
        usage = int(self._read("memory.usage_in_bytes")) - int(stat["total_inactive_file"])
        return float(usage), float(stat["total_rss"])


class MemorySampler:
    """Samples some containers every PERIOD seconds; keeps the last figures and each phase's peak."""

    PERIOD = 0.25

    def __init__(self, containers: list[str]):
        self.containers = [ContainerMemory(name) for name in containers]
        self.lock = threading.Lock()
        self.phase = "idle"
        self.last: dict[str, tuple[float, float]] = {}
        self.peak: dict[tuple[str, str], tuple[float, float]] = {}
        self.running = True
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        while self.running:
            for container in self.containers:
                usage, anon = container.sample()
                with self.lock:
                    self.last[container.name] = (usage, anon)
                    key = (self.phase, container.name)
                    old = self.peak.get(key, (0.0, 0.0))
                    self.peak[key] = (max(old[0], usage), max(old[1], anon))
            time.sleep(self.PERIOD)

    def set_phase(self, phase: str) -> None:
        with self.lock:
            self.phase = phase

    def snapshot(self) -> dict[str, tuple[float, float]]:
        with self.lock:
            return dict(self.last)

    def peaks(self, phase: str) -> dict[str, tuple[float, float]]:
        with self.lock:
            return {name: value for (p, name), value in self.peak.items() if p == phase}

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=5)




def project_containers(project: str) -> list[str]:
    names = subprocess.run(
        ["docker", "ps", "--filter", f"label=com.docker.compose.project={project}",
         "--format", "{{.Names}}"], capture_output=True, text=True, check=True).stdout.split()
    if not names:
        raise RuntimeError(f"no running containers in compose project {project!r}")
    return sorted(names)


def generate(url: str, prefix: str, length: int, seed: int, results: list, index: int) -> None:
    query = urllib.parse.urlencode({"prefix": prefix, "length": length, "seed": seed,
                                    "truncate": "false"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{url}/?{query}", timeout=900) as response:
            body = json.loads(response.read())
            results[index] = (response.status, body.get("tokens"), time.monotonic() - started)
    except urllib.error.HTTPError as error:
        results[index] = (error.code, None, time.monotonic() - started)


def pair_mib(pair) -> str:
    return f"{pair[0] / 1024 ** 2:.0f} / {pair[1] / 1024 ** 2:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="the stack's address")
    parser.add_argument("--project", default="pokegen", help="the compose project name")
    parser.add_argument("--concurrency", type=int, default=3, help="generations at once")
    parser.add_argument("--length", type=int, default=256, help="tokens per generation")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="seconds of idle sampling before and after the load")
    args = parser.parse_args()

    containers = project_containers(args.project)
    sampler = MemorySampler(containers)
    try:
        time.sleep(args.idle_seconds)
        idle = sampler.snapshot()

        sampler.set_phase("load")
        results: list = [None] * args.concurrency
        threads = [threading.Thread(target=generate,
                                    args=(args.url, "Ash and Pikachu", args.length, seed,
                                          results, seed))
                   for seed in range(args.concurrency)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        load_peak = sampler.peaks("load")

        sampler.set_phase("after")
        time.sleep(args.idle_seconds)
        after = sampler.snapshot()
    finally:
        sampler.stop()

    print(f"{args.concurrency} concurrent generations of {args.length} tokens: {wall:.1f} s wall")
    for index, result in enumerate(results):
        status, tokens, seconds = result or ("no answer", None, 0.0)
        print(f"  request {index}: status {status}, {tokens} tokens, {seconds:.1f} s")
    print("memory in MiB, usage as docker stats counts it / anonymous memory within it")
    print(f"{'container':<28}{'idle':>14}{'peak under load':>18}{'idle after':>14}")
    rows = [(name, idle.get(name), load_peak.get(name), after.get(name)) for name in containers]
    whole = [sum(row[i][j] for row in rows) for i in (1, 2, 3) for j in (0, 1)]
    rows.append(("whole stack (sum)", whole[0:2], whole[2:4], whole[4:6]))
    for name, *figures in rows:
        print(f"{name:<28}" + "".join(f"{pair_mib(pair):>{w}}" for pair, w in zip(figures, (14, 18, 14))))
    return 0 if all(result and result[0] == 200 for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
