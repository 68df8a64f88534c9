"""Stage 1: the edge against bare aiohttp (its goal), the same app with the prebuilt GIF and
nginx, 1 and 2 workers; every answered request must be in Kafka.

Per worker count every server runs at once, each on its own port (an idle one costs nothing),
and each connection level is measured in interleaved rounds: one wrk run per target a round,
the order reversed every other round (bench/rounds.py). This VM's speed drifts by 10-30% over
minutes; one target after another let that drift land on whichever ran later, while runs
seconds apart drift alike, so per-round ratios cancel it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import nginx, rounds, wrk
from bench.report import Results, say
from bench.scale import TARGETS, Scale
from bench.services import ROOT, peak_rss_kb, service_env, wait_http
from compose.processes import free_port
from schemas.topics import Topics

# The order within a round: the edge beside its goal's baseline, so that pair is adjacent in
# every round, and which of the two runs first alternates.
ROUND_ORDER = ("nginx", "prebuilt", "baseline", "edge")
assert sorted(ROUND_ORDER) == sorted(TARGETS)


async def count_published(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count, idle = 0, 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            n = sum(len(v) for v in batch.values())
            count += n
            idle = 0 if n else idle + 1
        return count
    finally:
        await consumer.stop()


def start(target: str, workers: int, port: int, env: dict[str, str], folder: Path,
          pin: list[str]) -> subprocess.Popen[bytes]:  # fmt: skip
    """One target's server on ``port``, not yet ready."""
    if target == "nginx":
        argv = nginx.command(port, workers, folder)
    else:
        module = ["-m", "ingest"] if target == "edge" \
            else ["-m", "bench.baseline", "--port", str(port)] \
            + (["--prebuilt"] if target == "prebuilt" else [])  # fmt: skip
        argv = [sys.executable, *module, "--workers", str(workers)]
    return subprocess.Popen([*pin, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(scale: Scale, bootstrap: str, clickhouse: str, workdir: Path, results: Results) -> None:
    cores = os.cpu_count() or 1
    targets: tuple[str, ...] = ROUND_ORDER
    if not nginx.available():
        say("  nginx is missing (`make tools` installs it): no nginx reference")
        targets = tuple(t for t in targets if t != "nginx")
    for workers in (1, 2):
        # One worker: servers on core 0, wrk on core 1. Two workers need both cores: wrk
        # then shares them (said in the report).
        pinned = workers == 1 and cores > 1
        ports = {target: free_port() for target in targets}
        prefixes = {target: f"edge{workers}{target}{uuid.uuid4().hex[:6]}" for target in targets}
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for target in targets:
                env = service_env(bootstrap, clickhouse, prefixes[target], workdir,
                                  edge_port=ports[target])  # fmt: skip
                processes[target] = start(target, workers, ports[target], env,
                                          workdir / prefixes[target],
                                          ["taskset", "-c", "0"] if pinned else [])  # fmt: skip
            for target in targets:
                health = "readyz" if target == "edge" else "healthz"
                wait_http(f"http://127.0.0.1:{ports[target]}/{health}")
            say(f"  workers={workers}: {', '.join(targets)} up"
                + (" (servers on core 0, wrk on core 1)" if pinned else ""))  # fmt: skip
            rows, answered, in_flight = measure(scale, targets, ports, "1" if pinned else None)
            rss = peak_rss_kb(processes["edge"].pid)
        finally:
            stop(list(processes.values()))
        for target in TARGETS:
            for connections in scale.concurrency:
                if (target, connections) in rows:
                    row = rows[target, connections]
                    row.update(target=target, workers=workers, connections=connections,
                               warmup_seconds=scale.warmup_seconds)  # fmt: skip
                    results.edge.append(row)
        published = asyncio.run(count_published(bootstrap, Topics(f"{prefixes['edge']}.").sales))
        results.memory[f"edge_peak_rss_mib_workers{workers}"] = round(rss / 1024, 1)
        last = rows["edge", scale.concurrency[-1]]
        last["answered_total"] = answered
        last["published_total"] = published
        # Requests in flight when a wrk run stops are handled (published) but not counted:
        # at most one per connection of every run against the edge, warm-ups included.
        ok = answered <= published <= answered + in_flight
        say(f"  edge workers={workers}: answered {answered:,}, published {published:,}"
            f"{'' if ok else '  MISMATCH'}")  # fmt: skip
        if not ok:
            raise SystemExit("the edge lost or duplicated events: benchmark failed")


def measure(
    scale: Scale, targets: tuple[str, ...], ports: dict[str, int], pin: str | None
) -> tuple[dict[tuple[str, int], dict[str, Any]], int, int]:
    """Every connection level in interleaved rounds: each (target, connections)'s row of
    medians, and the edge's answered requests and connections over all its runs."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    answered = in_flight = 0

    def load(target: str, connections: int, seconds: int) -> dict[str, Any]:
        nonlocal answered, in_flight
        run = wrk.run(f"http://127.0.0.1:{ports[target]}/sales.php", connections, seconds, pin)
        if target == "edge":
            answered += run["requests"] - run["non2xx"]
            in_flight += connections
        return run

    for connections in scale.concurrency:
        if scale.warmup_seconds:
            for target in targets:
                load(target, connections, scale.warmup_seconds)
        runs: dict[str, list[dict[str, Any]]] = {target: [] for target in targets}
        for round_ in range(scale.rounds):
            for target in rounds.order(targets, round_):
                runs[target].append(load(target, connections, scale.wrk_seconds))
            say(f"  c={connections:<4} round {round_ + 1}/{scale.rounds}: "
                + ", ".join(f"{t} {runs[t][-1]['rps']:,.0f}" for t in rounds.order(targets, round_))
                + " req/s")  # fmt: skip
        for target in TARGETS:
            if target in runs:
                row = rows[target, connections] = rounds.summary(runs[target])
                low, high = min(r["rps"] for r in runs[target]), max(r["rps"] for r in runs[target])
                say(f"  {target:8} c={connections:<4} {row['rps']:>9,.0f} req/s "
                    f"({low:,.0f}-{high:,.0f}) p50 {row['p50'] / 1000:.2f} ms "
                    f"p99 {row['p99'] / 1000:.2f} ms p99.9 {row['p999'] / 1000:.2f} ms")  # fmt: skip
        edge = rows["edge", connections]
        for reference in ("baseline", "prebuilt", "nginx"):
            if (reference, connections) in rows:
                theirs = rows[reference, connections]
                say(f"  edge/{reference:8} c={connections:<4} "
                    f"req/s {rounds.paired(edge, theirs, 'rps')} "
                    f"p99 {rounds.paired(edge, theirs, 'p99')}")  # fmt: skip
    return rows, answered, in_flight
