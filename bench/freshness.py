"""Stage 2: freshness, the delay from a sale's answer to its count in ``campaign_turnover``,
through a live edge and projector under wrk-paced load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import clickhouse_connect

from bench import wrk
from bench.scale import Scale
from bench.services import ROOT, service_env, wait_http
from compose.processes import free_port


def run(scale: Scale, bootstrap: str, clickhouse: str, workdir: Path) -> dict[str, Any]:
    return asyncio.run(measure(scale, bootstrap, clickhouse, workdir))


async def measure(scale: Scale, bootstrap: str, clickhouse: str, workdir: Path) -> dict[str, Any]:
    """Delay from a sale's answer to its count in ``campaign_turnover``, under paced load.

    wrk paces the load (each connection waits after every answer: see report.lua); the
    edge stamps each sale when it answers (``sold_at``), and a poller notes when the count
    in ``campaign_turnover`` moves. The k-th sale by ``sold_at`` is paired with the first
    poll that counted k sales. One clock: the edge, the poller and ClickHouse share a host.
    """
    prefix = f"fresh{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(bootstrap, clickhouse, prefix, workdir, edge_port=port)
    edge = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    projector = subprocess.Popen([sys.executable, "-m", "projector"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    client = await clickhouse_connect.get_async_client(dsn=clickhouse)
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/readyz")
        # /readyz of the projector: its group join is done, partitions are assigned.
        await asyncio.to_thread(
            wait_http, f"http://127.0.0.1:{env['TRACKER_PROJECTOR_PORT']}/readyz", 120
        )
        polls: list[tuple[float, int]] = []
        sql = f"SELECT sum(purchases) FROM {prefix}.campaign_turnover WHERE universe = 'fresh'"

        async def poll(stop: asyncio.Event) -> None:
            while not stop.is_set():
                count = int((await client.query(sql)).result_rows[0][0] or 0)
                polls.append((time.time(), count))
                await asyncio.sleep(0.02)

        stop = asyncio.Event()
        poller = asyncio.create_task(poll(stop))
        # C connections pausing PACE_MS after each answer: C / (pace + ~5 ms latency) per s.
        pace_ms = 30
        connections = max(1, round(scale.fresh_rate * (pace_ms + 5) / 1000))
        load = await asyncio.to_thread(
            wrk.run, f"http://127.0.0.1:{port}/sales.php", connections, scale.fresh_seconds, None,
            {"WRK_UNIVERSE": "fresh", "WRK_PACE_MS": str(pace_ms)},
        )  # fmt: skip
        answered = load["requests"] - load["non2xx"]
        deadline = time.monotonic() + 60
        while (not polls or polls[-1][1] < answered) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # and the calls in flight when wrk stopped
        stop.set()
        await poller
        result = await client.query(
            f"SELECT toUnixTimestamp64Milli(sold_at) FROM {prefix}.sales "
            "WHERE universe = 'fresh' ORDER BY sold_at"
        )
        sold = [ms / 1000 for (ms,) in result.result_rows]
        delays: list[float] = []
        seen = 0
        for at, count in polls:
            while seen < min(count, len(sold)):
                delays.append(at - sold[seen])
                seen += 1
        delays.sort()
        if not delays:
            return {"error": "nothing became visible"}
        return {
            "rate": round(load["rps"]), "seconds": scale.fresh_seconds, "sales": answered,
            "visible": polls[-1][1], "connections": connections, "pace_ms": pace_ms,
            "p50_s": round(delays[len(delays) // 2], 3),
            "p99_s": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3),
        }  # fmt: skip
    finally:
        await client.close()
        for process in (edge, projector):
            process.terminate()
            process.wait(timeout=120)
