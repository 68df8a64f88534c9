"""A frozen ClickHouse (SIGSTOP of its process, as a VM stall or a saturated disk freezes it)
in the middle of an insert: the projector's calls time out, are logged and counted as
retries, /readyz says ClickHouse is not answering, and once the server runs again the
retried insert, sent again under its token, is stored once (projector/store.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import clickhouse_connect
import pytest

from compose.processes import Service, free_port, http_check
from compose.stack import Stack
from helpers import produce, running_projector, settled
from projector.metrics import ProjectorMetrics
from projector.rows import Row
from projector.settings import ProjectorSettings
from projector.store import Store, writes_pattern
from scenario import actual, as_dict, generate, oracle, with_refunds

ROOT = Path(__file__).resolve().parents[2]
FROZEN_S = 6.0


def query(port: int, sql: str, **parameters: str) -> str:
    # The server reads a parameter's value escaped, as a TSV field.
    params = {f"param_{k}": v.replace("\\", "\\\\") for k, v in parameters.items()}
    url = f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, data=sql.encode())  # POST: SYSTEM needs it
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


class Freezer:
    """SIGSTOPs the server while the projector's next insert into a writes table runs in it.

    The insert is watched for in the server's own process list from the moment the projector
    sends it (``Store.insert`` is wrapped to say when): the server is frozen mid-insert, with
    the block received and neither answered nor known to be lost.
    """

    def __init__(self, port: int, pid: int, database: str) -> None:
        self.port = port
        self.pid = pid
        self.pattern = writes_pattern(database, 1)
        self.armed = False
        self.frozen = asyncio.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        insert = Store.insert
        freezer = self

        async def watched(
            store: Store, table: str, columns: Sequence[str], rows: Sequence[Row], token: str
        ) -> None:
            if not (freezer.armed and table.startswith("sales_writes")):
                return await insert(store, table, columns, rows, token)
            task = asyncio.create_task(insert(store, table, columns, rows, token))
            seen = await asyncio.to_thread(freezer._freeze_when_seen, task)
            if seen:
                freezer.armed = False
                freezer.frozen.set()
            return await task

        monkeypatch.setattr(Store, "insert", watched)

    def _freeze_when_seen(self, task: asyncio.Task[None]) -> bool:
        sql = (
            "SELECT count() FROM system.processes WHERE query_kind = 'Insert' "
            "AND match(query, {pattern:String})"
        )
        while not task.done():
            if int(query(self.port, sql, pattern=self.pattern).strip() or 0):
                os.kill(self.pid, signal.SIGSTOP)
                return True
        return False


def retried(metrics: ProjectorMetrics) -> dict[str, float]:
    return {
        sample.labels["operation"]: sample.value
        for metric in metrics.registry.collect()
        if metric.name == "tracker_projector_clickhouse_retries"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    }


@pytest.fixture
def clickhouse(tmp_path: Path) -> tuple[Service, int]:
    port = free_port()
    return Service(
        name="clickhouse-own",
        argv=[sys.executable, "-m", "compose.clickhouse_server", "--data-dir",
              str(tmp_path / "ch"), "--port", str(port), "--system-logs"],
        cwd=ROOT, health=http_check(f"http://127.0.0.1:{port}/ping", "Ok."),
    ), port  # fmt: skip


async def test_a_clickhouse_frozen_mid_insert_is_retried_reported_and_counted_once(
    tmp_path: Path,
    projector_settings: ProjectorSettings,
    clickhouse: tuple[Service, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, port = clickhouse
    stack = Stack([service], tmp_path / "logs")
    stack.start()
    assert service.process is not None
    pid = service.process.pid
    settings = dataclasses.replace(
        projector_settings, clickhouse_url=f"http://127.0.0.1:{port}", clickhouse_timeout_s=2,
        clickhouse_connect_timeout_s=1, batch_max=2000,
    )  # fmt: skip
    db = settings.clickhouse_database
    clicks, sold = generate(seed=21, sales=2400)
    calls = with_refunds(sold, seed=21)
    freezer = Freezer(port, pid, db)
    freezer.install(monkeypatch)
    frozen = False
    try:
        async with running_projector(settings) as projector:
            ch = await clickhouse_connect.get_async_client(dsn=settings.clickhouse_url)
            try:
                await produce(settings, clicks)
                await settled(ch, db, len(clicks))
            finally:
                await ch.close()

            # Calls in bursts, the projector writing them in inserts of up to 2,000 rows: the
            # server is frozen in the first insert of calls it is seen running.
            freezer.armed = True
            half = len(calls) // 2
            await produce(settings, calls[:half])
            await asyncio.wait_for(freezer.frozen.wait(), timeout=60)
            frozen = True
            await produce(settings, calls[half:])  # the edge goes on publishing meanwhile

            # While it hangs: timeouts, each logged and counted as a retry, and /readyz says so.
            said: set[str] = set()
            until = time.monotonic() + FROZEN_S
            while time.monotonic() < until:
                if projector.health is not None:
                    said.add(projector.health)
                await asyncio.sleep(0.1)
            during = retried(projector.metrics)
            os.kill(pid, signal.SIGCONT)
            frozen = False
            assert during.get("write to ClickHouse", 0) >= 1, during
            assert any("ClickHouse not answering (nothing within 2 s)" in h for h in said), said

            ch = await clickhouse_connect.get_async_client(dsn=settings.clickhouse_url)
            try:
                await settled(ch, db, len(clicks) + len(calls), timeout=120)
                assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls))
            finally:
                await ch.close()
            assert projector.health is None
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
    # The block the server froze in reached it again (the same token) and was stored once.
    query(port, "SYSTEM FLUSH LOGS")
    sent_again = query(
        port,
        "SELECT count() FROM (SELECT Settings['insert_deduplication_token'] AS token "
        "FROM system.query_log WHERE type = 'QueryStart' AND query_kind = 'Insert' "
        "AND token != '' GROUP BY token HAVING count() > 1)",
    )
    stack.stop()
    assert int(sent_again.strip()) >= 1
