"""A real HTTP call to the edge shows up in ClickHouse through Kafka and the projector."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import orjson
from clickhouse_connect.driver.asyncclient import AsyncClient
from conftest import TEST_API_KEY

from helpers import eventually, rows, running_edge, running_projector
from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings
from rawhttp import chunked, exchange, request_head


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


def api_request(writes: list[bytes], headers: list[tuple[str, bytes]]) -> list[bytes]:
    head = request_head(
        "POST", b"/v1/sales", [("Authorization", f"Bearer {TEST_API_KEY}".encode()), *headers]
    )
    return [head, *writes]


async def test_api_bodies_in_pieces_or_chunked_are_all_counted(
    edge_settings: EdgeSettings, projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    db = projector_settings.clickhouse_database
    big = orjson.dumps(
        [{"amount": f"{i},25", "id": f"piece-{i:05d}-{'x' * 60}", "customer": f"c{i % 37}"}
         for i in range(1000)]
    )  # fmt: skip
    small = b'{"amount":"12.50","id":"two-writes","customer":"alice","currency":"EUR"}'
    chunked_body = orjson.dumps([{"amount": f"{i}.01", "id": f"chunk-{i}"} for i in range(300)])
    requests = [
        # ~150 KB in 16 KB pieces, 50 ms apart
        (api_request([big[i : i + 16_000] for i in range(0, len(big), 16_000)],
                     [("Content-Length", str(len(big)).encode())]), 0.05),
        # one sale in two writes 0.3 s apart
        (api_request([small[:30], small[30:]], [("Content-Length", str(len(small)).encode())]),
         0.3),
        (api_request(chunked(chunked_body, 4096), [("Transfer-Encoding", b"chunked")]), 0.02),
    ]  # fmt: skip
    async with running_projector(projector_settings), running_edge(edge_settings):
        for writes, pause in requests:
            response = await exchange(edge_settings.host, edge_settings.port, writes, pause)
            assert response.status == 202, response.body[:200]
            assert orjson.loads(response.body)["rejected"] == 0

        # Per currency: the one EUR sale is never added to the others.
        expected = sum(Decimal(f"{i}.25") for i in range(1000)) + sum(
            Decimal(f"{i}.01") for i in range(300)
        )

        async def counted() -> list[tuple[object, ...]]:
            exists = await rows(ch, f"EXISTS TABLE {db}.campaign_turnover")
            if exists != [(1,)]:
                return []
            return await rows(
                ch,
                f"SELECT currency, purchases, turnover FROM {db}.campaign_turnover "
                "ORDER BY currency",
            )

        assert await eventually(
            counted, lambda r: r == [("", 1300, expected), ("EUR", 1, Decimal("12.5"))], timeout=60
        )
