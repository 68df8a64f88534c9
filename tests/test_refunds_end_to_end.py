"""Refunds through the real edge, broker, projector and ClickHouse: the rollups show gross,
refunded and net figures; every rejection is in refunds_calls with its reason; a refund id
counts once; the pixel can lower nothing; a generation made before refunds is upgraded in
place."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from clickhouse_connect.driver.asyncclient import AsyncClient
from conftest import TEST_API_KEY

from helpers import eventually, produce, rows, running_edge, running_projector, settled
from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings
from scenario import click, refund, sale

FIXTURES = Path(__file__).parent / "fixtures"
AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
HOUR_MS = 3_600_000
TOTALS = "purchases, turnover, gross_purchases, gross_turnover, refunds, refunded_turnover"


async def post(
    session: aiohttp.ClientSession, url: str, body: object, status: int = 202
) -> list[Any]:
    async with session.post(url, json=body, headers=AUTH) as r:
        answer = await r.json()
        assert r.status == status, answer
        results: list[Any] = answer["results"]
        return results


async def refund_calls(ch: AsyncClient, db: str) -> list[tuple[object, ...]]:
    if await rows(ch, f"EXISTS TABLE {db}.refunds_calls") != [(1,)]:
        return []
    return await rows(
        ch, f"SELECT refund_id, status, reason FROM {db}.refunds_calls ORDER BY received_at"
    )


async def test_api_refunds_lower_net_turnover_and_purchases_and_each_rejection_is_recorded(
    edge_settings: EdgeSettings, projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    db = projector_settings.clickhouse_database
    now = time.time_ns() // 1_000_000
    async with (
        running_projector(projector_settings),
        running_edge(edge_settings) as base,
        aiohttp.ClientSession() as session,
    ):
        await produce(
            projector_settings, [click("c1", "alice", "spring", "hero", at=now - HOUR_MS)]
        )
        await settled(ch, db, 1)
        sales = [
            {"id": "o-1", "amount": "100.00", "customer": "alice", "currency": "EUR"},
            {"id": "o-2", "amount": "50", "customer": "bob", "currency": "EUR"},
        ]
        assert [r["status"] for r in await post(session, f"{base}/v1/sales", sales)] == [
            "accepted"
        ] * 2
        await settled(ch, db, 3)

        refunds: list[dict[str, str]] = [
            {"id": "o-1", "refund_id": "r-1", "amount": "30"},  # counted: partial
            {"id": "o-1", "refund_id": "r-2", "amount": "80"},  # more than the 70 left
            {"id": "o-1", "refund_id": "r-3", "currency": "USD"},  # not the sale's currency
            {"id": "nope", "refund_id": "r-4"},  # no such sale
            {"id": "o-2", "refund_id": "r-5"},  # counted: the whole sale
            {"id": "o-3", "refund_id": "r-7"},  # before its sale
            {"id": "o-1", "amount": "1"},  # no refund id: refused at once
            {"id": "o-1", "refund_id": "r-6", "amount": "0"},  # refused at once
            {"id": "o-1", "refund_id": "r-8", "universe": "shop_b"},  # not this key's universe
        ]
        answered = await post(session, f"{base}/v1/refunds", refunds)
        assert [(r["status"], r.get("reason")) for r in answered] == [
            *[("accepted", None)] * 6, ("rejected", "refund_id_invalid"),
            ("rejected", "refund_amount_zero"), ("rejected", "universe_not_allowed"),
        ]  # fmt: skip
        assert answered[6]["message"].startswith("refund_id is required")
        found = await eventually(lambda: refund_calls(ch, db), lambda r: len(r) == 9)
        assert sorted(found, key=str) == sorted(
            [
                ("r-1", "counted", ""), ("r-2", "rejected", "refund_above_remaining"),
                ("r-3", "rejected", "currency_mismatch"), ("r-4", "rejected", "sale_unknown"),
                ("r-5", "counted", ""), ("r-7", "rejected", "sale_unknown"),
                ("", "rejected", "refund_id_invalid"), ("r-6", "rejected", "refund_amount_zero"),
                ("r-8", "rejected", "universe_not_allowed"),
            ],
            key=str,
        )  # fmt: skip

        # The sale comes, then the refund rejected before it is sent again: counted now. And
        # the counted r-1 again (another event): a duplicate, nothing moves.
        await post(session, f"{base}/v1/sales", {"id": "o-3", "amount": "10", "currency": "EUR"})
        await settled(ch, db, 4 + 9)
        await post(session, f"{base}/v1/refunds", [{"id": "o-3", "refund_id": "r-7"}])
        await post(
            session, f"{base}/v1/refunds", [{"id": "o-1", "refund_id": "r-1", "amount": "30"}]
        )
        # The pixel has no refund path: a call with refund-looking parameters is a sale call
        # (here a duplicate of o-1, and one with a negative amount rejected), never a refund.
        for query in ("id=o-1&amount=30&refund_id=r-9", "id=o-2&amount=-50&refund=1"):
            async with session.get(f"{base}/sales.php?universe=demo&{query}") as r:
                assert r.status == 200 and r.content_type == "image/gif"
        async with session.get(f"{base}/v1/refunds?id=o-1&refund_id=r-10", headers=AUTH) as r:
            assert r.status == 405
        await settled(ch, db, 4 + 9 + 2 + 2)
        found = await eventually(lambda: refund_calls(ch, db), lambda r: len(r) == 11)
        assert found[-2:] == [
            ("r-7", "counted", ""),
            ("r-1", "duplicate", "refund_already_counted"),
        ]

        today = (await rows(ch, "SELECT today()"))[0][0]
        eur = "universe = 'demo' AND currency = 'EUR'"
        assert await rows(
            ch, f"SELECT campaign_id, {TOTALS} FROM {db}.campaign_turnover WHERE {eur} "
            "ORDER BY campaign_id"
        ) == [
            ("", 0, Decimal(0), 2, Decimal(60), 2, Decimal(60)),  # bob's 50 and o-3's 10
            ("spring", 1, Decimal(70), 1, Decimal(100), 1, Decimal(30)),
        ]  # fmt: skip
        assert await rows(
            ch, f"SELECT link_id, {TOTALS} FROM {db}.link_turnover WHERE {eur} AND link_id != ''"
        ) == [("hero", 1, Decimal(70), 1, Decimal(100), 1, Decimal(30))]
        assert await rows(
            ch, f"SELECT customer_id, {TOTALS} FROM {db}.customer_turnover WHERE {eur} "
            "ORDER BY customer_id"
        ) == [
            ("alice", 1, Decimal(70), 1, Decimal(100), 1, Decimal(30)),
            ("bob", 0, Decimal(0), 1, Decimal(50), 1, Decimal(50)),
        ]  # fmt: skip
        assert await rows(
            ch, f"SELECT day, {TOTALS} FROM {db}.campaign_turnover_daily "
            f"WHERE {eur} AND campaign_id = 'spring'"
        ) == [(today, 1, Decimal(70), 1, Decimal(100), 1, Decimal(30))]  # fmt: skip
        # Segments by net turnover: bob's refunded 50 no longer counts.
        assert await rows(
            ch, f"SELECT * FROM {db}.customers_by_turnover(universe='demo', currency='EUR', "
            "min=40, max=1000)"
        ) == [("alice", 1, Decimal(70))]  # fmt: skip
        assert await rows(
            ch, f"SELECT transaction_id, refund_id, amount, full_refund, campaign_id FROM {db}.refunds "
            "ORDER BY refund_id"
        ) == [
            ("o-1", "r-1", Decimal(30), 0, "spring"), ("o-2", "r-5", Decimal(50), 1, ""),
            ("o-3", "r-7", Decimal(10), 1, ""),
        ]  # fmt: skip


async def test_a_generation_made_before_refunds_is_upgraded_in_place_and_keeps_answering(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    """The DDL of the version before refunds (tests/fixtures/ddl_g1_before_refunds.sql), with
    a sale counted by it; a projector of today starts on it: tables and columns are added,
    old rows read 0 refunds, and a refund of that old sale counts."""
    db = projector_settings.clickhouse_database
    text = (FIXTURES / "ddl_g1_before_refunds.sql").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    for sql in filter(None, (s.strip() for s in code.split(";"))):
        await ch.command(sql.replace("tracker", db))
    await ch.command(f"INSERT INTO {db}.generations (generation) VALUES (1)")
    old = sale("e-old", "o-old", amount="100", currency="EUR", customer_id="carol")
    await produce(projector_settings, [old])
    async with running_projector(projector_settings):
        await settled(ch, db, 1)
        assert await rows(ch, f"SELECT {TOTALS} FROM {db}.customer_turnover") == [
            (1, Decimal(100), 1, Decimal(100), 0, Decimal(0))
        ]
        await produce(
            projector_settings,
            [refund("r-old", "o-old", "rf-1", amount="25", at=old.received_at_ms + 1000)],
        )
        await settled(ch, db, 2)
        assert await rows(ch, f"SELECT customer_id, {TOTALS} FROM {db}.customer_turnover") == [
            ("carol", 1, Decimal(75), 1, Decimal(100), 1, Decimal(25))
        ]
    columns = await rows(
        ch, f"SELECT name FROM system.columns WHERE database = '{db}' "
        "AND table = 'campaign_rollup_g1' ORDER BY position"
    )  # fmt: skip
    assert [c for (c,) in columns][-3:] == ["refunds", "refunded_purchases", "refunded_turnover"]
