"""A real HTTP call to the edge shows up in ClickHouse through Kafka and the projector."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
from clickhouse_connect.driver.asyncclient import AsyncClient

from helpers import eventually, rows, running_edge, running_projector
from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings


async def test_pixel_call_reaches_the_sales_table(
    edge_settings: EdgeSettings, projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    db = projector_settings.clickhouse_database

    async def sales() -> list[tuple[object, ...]]:
        exists = await rows(ch, f"EXISTS TABLE {db}.sales")
        if exists != [(1,)]:
            return []
        return await rows(ch, f"SELECT universe, transaction_id, amount FROM {db}.sales")

    async with running_projector(projector_settings), running_edge(edge_settings) as base:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/sales.php?universe=demo&amount=12,50&id=t1") as r,
        ):
            assert r.status == 200
        assert await eventually(sales, bool) == [("demo", "t1", Decimal("12.5"))]
