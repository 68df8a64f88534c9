"""Scale-out: two live projector processes in one consumer group on the same log, into a
fresh database whose clicks are written first. Their throughput together, their exact totals, and the partition split
each reports in its lag metrics (a partition's series exists only on the member that
holds it)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect

from bench.report import say
from bench.services import ROOT, service_env
from bench.workload import Workload
from compose.processes import free_port
from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.settings import ProjectorSettings

_LAG = re.compile(r'^tracker_projector_lag\{partition="(\d+)",topic="([^"]+)"\}', re.M)


def assigned(metrics_text: str) -> set[str]:
    """``topic[partition]`` of every partition a projector's /metrics shows a lag for."""
    return {f"{topic}[{partition}]" for partition, topic in _LAG.findall(metrics_text)}


def scrape(port: int) -> str:
    """A projector's /metrics text ('' while it is not answering yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def written(clickhouse: str, database: str) -> int:
    """Ledger rows in the live generation (0 before the projector created it)."""
    client = clickhouse_connect.get_client(dsn=clickhouse)
    try:
        return int(
            client.query(
                f"SELECT (SELECT count() FROM {database}.sales_calls) "
                f"+ (SELECT count() FROM {database}.clicks)"
            ).result_rows[0][0]
        )
    except clickhouse_connect.driver.exceptions.DatabaseError:
        return 0
    finally:
        client.close()


def run(
    bootstrap: str, clickhouse: str, prefix: str, workload: Workload, workdir: Path,
    check: Callable[[str, str, Workload], bool], single_events_per_s: int,
) -> dict[str, Any]:  # fmt: skip
    """Both processes from start to the whole log written; SIGTERM; totals and split."""
    database = f"{prefix}_two"
    base = {
        **service_env(bootstrap, clickhouse, prefix, workdir),
        "TRACKER_CLICKHOUSE_DATABASE": database,
        "TRACKER_PROJECTOR_GROUP": f"{prefix}-two",
        "TRACKER_LOG_FORMAT": "text",
    }
    # Clicks first, as in life (a click precedes its sale by more than the projector's lag):
    # live members attribute a sale from the clicks already stored, so clicks projected
    # alongside their sales would be missed (docs/limits.md). Measured: the sales.
    settings = ProjectorSettings.from_env(base)
    asyncio.run(
        Projector(settings, ProjectorMetrics(), generation=1, topics=(settings.kafka.topics.clicks,))
        .run(asyncio.Event(), burst=True)
    )  # fmt: skip
    total = len(workload.clicks) + len(workload.calls)
    ports = [free_port(), free_port()]
    processes: list[subprocess.Popen[bytes]] = []
    split: list[set[str]] = [set(), set()]
    started = time.perf_counter()
    try:
        for i, port in enumerate(ports):
            with (workdir / f"{database}-{i}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "projector"], cwd=ROOT,
                        env={**base, "TRACKER_PROJECTOR_PORT": str(port)},
                        stdout=log, stderr=subprocess.STDOUT,
                    )
                )  # fmt: skip
        while (done := written(clickhouse, database)) < total:
            # The last split both reported, once the group settled (each holds some).
            seen = [assigned(scrape(port)) for port in ports]
            if all(seen):
                split = seen
            if any(p.poll() is not None for p in processes):
                raise RuntimeError(f"a projector exited during scale-out at {done:,}/{total:,}")
            time.sleep(0.5)
        seconds = time.perf_counter() - started
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
    exact = check(clickhouse, database, workload)
    calls = len(workload.calls)
    found = {
        "events": calls, "seconds": round(seconds, 2), "events_per_s": round(calls / seconds),
        "single_events_per_s": single_events_per_s, "exact": exact,
        "partitions": [sorted(s) for s in split],
    }  # fmt: skip
    say(f"  two projectors: {calls:,} sales calls in {seconds:.1f}s = {calls / seconds:,.0f}/s; "
        f"totals {'exact' if exact else 'WRONG'}; split {found['partitions']}")  # fmt: skip
    return found
