"""The issue's flood: pixel calls each inventing a universe, through the real edge and
projector. With a registry, none is counted; each is recorded as `universe_unknown`, and
every call still gets the image."""

from __future__ import annotations

import asyncio
import time

from clickhouse_connect.driver.asyncclient import AsyncClient

from helpers import Edge, rows, running_projector, settled
from helpers import universes_ok as ok
from ingest.gif import PIXEL
from projector.settings import ProjectorSettings

FLOOD = 30_000
CONNECTIONS = 32


async def test_a_flood_of_invented_universes_counts_none(
    service_env: dict[str, str], edge: Edge, projector_settings: ProjectorSettings,
    ch: AsyncClient,
) -> None:  # fmt: skip
    ok(service_env, "add", "demo")
    db = projector_settings.clickhouse_database
    images = 0

    async def caller(first: int) -> None:
        nonlocal images
        for i in range(first, FLOOD, CONNECTIONS):
            url = f"{edge.base}/sales.php?universe=made-up-{i}&amount=1000000000&id=t{i}"
            async with edge.session.get(url) as response:
                images += response.status == 200 and await response.read() == PIXEL

    async with running_projector(projector_settings):
        started = time.monotonic()
        await asyncio.gather(*(caller(c) for c in range(CONNECTIONS)))
        sent = time.monotonic() - started
        async with edge.session.get(f"{edge.base}/sales.php?universe=demo&amount=1&id=ok") as r:
            assert r.status == 200
        await settled(ch, db, FLOOD + 1, timeout=300)
        settled_s = time.monotonic() - started
    assert images == FLOOD
    assert await rows(
        ch, f"SELECT status, reason, count(), uniqExact(universe) FROM {db}.sales_calls "
        "GROUP BY status, reason ORDER BY status",
    ) == [("counted", "", 1, 1), ("rejected", "universe_unknown", FLOOD, FLOOD)]  # fmt: skip
    assert await rows(ch, f"SELECT universe, purchases FROM {db}.campaign_turnover") == [
        ("demo", 1)
    ]
    print(f"{FLOOD} calls answered in {sent:.1f} s, all projected after {settled_s:.1f} s")
