"""The projector against the real broker and ClickHouse, with exact expected numbers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import date
from decimal import Decimal

import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient

from helpers import eventually, produce, read_topic, rows, running_projector, settled
from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.rebuild import rebuild
from projector.settings import ProjectorSettings
from projector.sink import ClickHouseSink
from scenario import (
    DAY_MS,
    T0,
    actual,
    as_dict,
    click,
    generate,
    oracle,
    refund,
    sale,
    with_refunds,
)
from schemas.ddl import meta_statements, table_statements, view_statements
from schemas.events import Click, SaleCall, encode
from schemas.refunds import RefundCall


async def replay(settings: ProjectorSettings) -> Projector:
    """Replay the whole log into the live tables without a consumer group, to the end."""
    projector = Projector(settings, ProjectorMetrics(), generation=1)
    await asyncio.wait_for(projector.run(asyncio.Event(), burst=True), timeout=120)
    return projector


@contextlib.asynccontextmanager
async def live(settings: ProjectorSettings, ch: AsyncClient) -> AsyncIterator[Feeder]:
    """One running projector (one group join) for the whole test."""
    async with running_projector(settings) as projector:
        yield Feeder(settings, ch, projector)


class Feeder:
    def __init__(self, settings: ProjectorSettings, ch: AsyncClient, projector: Projector) -> None:
        self.settings = settings
        self.ch = ch
        self.projector = projector
        self.sent = 0

    async def send(
        self, events: Sequence[SaleCall | RefundCall | Click | tuple[bytes, bytes]]
    ) -> None:
        """Publish, then wait until every event published so far has its ledger row."""
        await produce(self.settings, events)
        self.sent += len(events)
        await settled(self.ch, self.settings.clickhouse_database, self.sent)

    async def feed(self, clicks: list[Click], calls: Sequence[SaleCall | RefundCall]) -> None:
        """Clicks first, then the calls: as in life, a click precedes its sale."""
        await self.send(list(clicks))
        await self.send(list(calls))


async def feed(
    settings: ProjectorSettings, ch: AsyncClient, clicks: list[Click], calls: list[SaleCall]
) -> None:
    async with live(settings, ch) as feeder:
        await feeder.feed(clicks, calls)


async def test_refreshes_and_pixel_plus_api_duplicates_count_once(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    calls = [
        sale("e1", "t1", amount="100.00"),
        sale("e2", "t1", amount="100.00"),  # refreshed confirmation page
        sale("e3", "t1", amount="100.00", source="api"),  # the same sale from the back end
        sale("e4", "t2", amount="5"),
    ]
    async with live(projector_settings, ch) as feeder:
        await feeder.feed([], calls)
        await feeder.send([sale("e5", "t1", amount="100.00")])  # a day later

    db = projector_settings.clickhouse_database
    assert await rows(
        ch, f"SELECT transaction_id, amount, event_id FROM {db}.sales ORDER BY transaction_id"
    ) == [
        ("t1", Decimal("100"), "e1"),
        ("t2", Decimal("5"), "e4"),
    ]
    assert await rows(
        ch, f"SELECT event_id, status, reason FROM {db}.sales_calls ORDER BY event_id"
    ) == [
        ("e1", "counted", ""),
        ("e2", "duplicate", "transaction_already_counted"),
        ("e3", "duplicate", "transaction_already_counted"),
        ("e4", "counted", ""),
        ("e5", "duplicate", "transaction_already_counted"),
    ]
    assert await rows(
        ch,
        f"SELECT universe, campaign_id, currency, purchases, turnover FROM {db}.campaign_turnover",
    ) == [("demo", "", "", 2, Decimal("105"))]


async def test_comma_and_dot_amounts_add_up_exactly(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    calls = [
        sale("e1", "t1", amount="12.50", amount_raw="12,50"),
        sale("e2", "t2", amount="0.10", amount_raw="0.10"),
        sale("e3", "t3", amount="0.2", amount_raw="0,2"),
        sale("e4", "t4", amount="999999999.9999", amount_raw="999999999,9999"),
    ]
    await feed(projector_settings, ch, [], calls)
    db = projector_settings.clickhouse_database
    assert await rows(ch, f"SELECT purchases, turnover FROM {db}.campaign_turnover") == [
        (4, Decimal("1000000012.7999"))
    ]
    assert await rows(ch, f"SELECT amount_raw FROM {db}.sales_calls ORDER BY event_id") == [
        ("12,50",), ("0.10",), ("0,2",), ("999999999,9999",)
    ]  # fmt: skip


async def test_last_click_wins_across_two_campaigns(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    clicks = [
        click("c1", "alice", "spring", "spring-hero", at=T0),
        click("c2", "alice", "summer", "summer-footer", at=T0 + DAY_MS),
        click("c3", "bob", "spring", "spring-hero", at=T0),
    ]
    calls = [
        sale("e1", "t1", customer_id="alice", amount="30", at=T0 + 2 * DAY_MS),
        sale("e2", "t2", customer_id="alice", amount="20", at=T0 + DAY_MS // 2),
        sale("e3", "t3", customer_id="bob", amount="7", at=T0 + DAY_MS),
        # the cookie's click wins over stored ones: it is this browser's last click
        sale(
            "e4",
            "t4",
            amount="1",
            at=T0 + 2 * DAY_MS,
            context=("bob", "autumn", "a-1", T0 + DAY_MS),
        ),
    ]
    await feed(projector_settings, ch, clicks, calls)
    db = projector_settings.clickhouse_database
    assert await rows(
        ch,
        f"SELECT transaction_id, customer_id, campaign_id, link_id FROM {db}.sales ORDER BY transaction_id",
    ) == [
        ("t1", "alice", "summer", "summer-footer"),
        ("t2", "alice", "spring", "spring-hero"),
        ("t3", "bob", "spring", "spring-hero"),
        ("t4", "bob", "autumn", "a-1"),
    ]
    assert await rows(
        ch,
        f"SELECT campaign_id, purchases, turnover FROM {db}.campaign_turnover ORDER BY campaign_id",
    ) == [
        ("autumn", 1, Decimal(1)),
        ("spring", 2, Decimal(27)),
        ("summer", 1, Decimal(30)),
    ]
    assert await rows(
        ch,
        f"SELECT customer_id, purchases, turnover FROM {db}.customer_turnover ORDER BY customer_id",
    ) == [
        ("alice", 2, Decimal(50)),
        ("bob", 2, Decimal(8)),
    ]


async def test_clicks_after_the_sale_and_outside_the_window_are_ignored(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    clicks = [
        click("c1", "alice", "old", "o-1", at=T0),
        click("c2", "alice", "later", "l-1", at=T0 + 40 * DAY_MS),
    ]
    calls = [
        sale("e1", "t1", customer_id="alice", amount="10", at=T0 + 31 * DAY_MS),
        sale("e2", "t2", customer_id="alice", amount="5", at=T0 + 30 * DAY_MS),  # window edge: in
    ]
    await feed(projector_settings, ch, clicks, calls)
    db = projector_settings.clickhouse_database
    assert await rows(
        ch, f"SELECT transaction_id, campaign_id FROM {db}.sales ORDER BY transaction_id"
    ) == [
        ("t1", ""),
        ("t2", "old"),
    ]
    assert await rows(
        ch, f"SELECT customer_id, purchases, turnover FROM {db}.customer_turnover"
    ) == [("alice", 2, Decimal(15))]


async def test_universes_never_mix(projector_settings: ProjectorSettings, ch: AsyncClient) -> None:
    clicks = [click("c1", "alice", "promo", "p-1", at=T0, universe="shop_a")]
    calls = [
        sale("e1", "t1", universe="shop_a", customer_id="alice", amount="10", at=T0 + 1),
        sale("e2", "t1", universe="shop_b", customer_id="alice", amount="20", at=T0 + 1),
    ]
    await feed(projector_settings, ch, clicks, calls)
    db = projector_settings.clickhouse_database
    assert await rows(
        ch,
        f"SELECT universe, campaign_id, purchases, turnover FROM {db}.campaign_turnover ORDER BY universe",
    ) == [
        ("shop_a", "promo", 1, Decimal(10)),
        ("shop_b", "", 1, Decimal(20)),
    ]
    assert await rows(
        ch, f"SELECT universe, customer_id, turnover FROM {db}.customer_turnover ORDER BY universe"
    ) == [
        ("shop_a", "alice", Decimal(10)),
        ("shop_b", "alice", Decimal(20)),
    ]


async def test_currencies_are_never_added_up(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    clicks = [click("c1", "alice", "promo", "p-1", at=T0)]
    calls = [
        sale("e1", "t1", customer_id="alice", amount="10", at=T0 + 1, currency="EUR"),
        sale("e2", "t2", customer_id="alice", amount="10", at=T0 + 2, currency="USD"),
        sale("e3", "t3", customer_id="alice", amount="2.5", at=T0 + 3),  # named no currency
    ]
    await feed(projector_settings, ch, clicks, calls)
    db = projector_settings.clickhouse_database
    per_currency = [
        ("", 1, Decimal("2.5")),
        ("EUR", 1, Decimal(10)),
        ("USD", 1, Decimal(10)),
    ]
    for view, keys in (
        ("campaign_turnover", "campaign_id = 'promo'"),
        ("customer_turnover", "customer_id = 'alice'"),
        ("link_turnover", "campaign_id = 'promo' AND link_id = 'p-1'"),
        ("campaign_turnover_daily", "campaign_id = 'promo' AND day = '2026-01-01'"),
    ):
        assert (
            await rows(
                ch,
                f"SELECT currency, purchases, turnover FROM {db}.{view} "
                f"WHERE universe = 'demo' AND {keys} ORDER BY currency",
            )
            == per_currency
        ), view
    for currency, found in (
        ("EUR", [("alice", 1, Decimal(10))]),
        ("", [("alice", 1, Decimal("2.5"))]),
        ("GBP", []),
    ):
        assert (
            await rows(
                ch,
                f"SELECT * FROM {db}.customers_by_turnover"
                f"(universe='demo', currency='{currency}', min=1, max=20)",
            )
            == found
        ), currency


async def test_undecodable_message_goes_to_dead_letters_and_the_partition_moves_on(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    good = sale("e1", "t1", amount="5")
    # One key: both land in one partition, the bad one first.
    async with live(projector_settings, ch) as feeder:
        await feeder.send([(b"k", b"{broken"), (b"k", encode(good))])
        projector = feeder.projector

    db = projector_settings.clickhouse_database
    assert await rows(ch, f"SELECT transaction_id FROM {db}.sales") == [("t1",)]
    assert await rows(
        ch, f"SELECT payload, startsWith(reason, 'not JSON') FROM {db}.dead_letters"
    ) == [("{broken", True)]
    dead = await read_topic(
        projector_settings.kafka.bootstrap[0], projector_settings.kafka.topics.dead_letters, 1
    )
    assert [d.value for d in dead] == [b"{broken"]
    headers = dict(dead[0].headers)
    assert headers["reason"].startswith(b"not JSON")
    assert headers["source"].startswith(projector_settings.kafka.topics.sales.encode() + b"[")
    assert projector.metrics.dead_letters._value.get() == 1
    # A replay does not dead-letter it again: its position is stored with the results.
    await replay(projector_settings)
    assert await rows(ch, f"SELECT count() FROM {db}.dead_letters") == [(1,)]


async def test_generated_log_matches_the_oracle_exactly(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    clicks, calls = generate(seed=7, sales=3000)
    await feed(projector_settings, ch, clicks, calls)
    expected = oracle(clicks, calls)
    assert expected.calls["duplicate"] > 200 and expected.calls["rejected"] > 50
    assert as_dict(await actual(ch, projector_settings.clickhouse_database)) == as_dict(expected)


async def test_sql_surface_answers_the_documented_examples(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    """docs/analysts.md's "A small example", query for query."""
    clicks = [
        click("c1", "alice", "spring", "hero", at=T0),
        click("c2", "bob", "spring", "footer", at=T0),
        click("c3", "carol", "summer", "hero", at=T0),
    ]
    calls = [
        sale("e1", "o-1", customer_id="alice", amount="120.00", at=T0 + DAY_MS, currency="EUR"),
        sale("e2", "o-1", customer_id="alice", amount="120.00", at=T0 + DAY_MS, currency="EUR"),
        sale("e3", "o-2", customer_id="alice", amount="80.50", at=T0 + 2 * DAY_MS, currency="EUR"),
        sale("e4", "o-3", customer_id="bob", amount="1500", at=T0 + DAY_MS, currency="EUR"),
        sale("e5", "o-4", customer_id="carol", amount="40", at=T0 + DAY_MS, currency="EUR"),
        sale("e6", "o-5", amount="9.99", at=T0 + DAY_MS, currency="USD"),
        sale(
            "e7",
            "o-6",
            amount="",
            amount_raw="1.000,00",
            status="rejected",
            reason="amount_malformed",
        ),
    ]
    await feed(projector_settings, ch, clicks, calls)
    db = projector_settings.clickhouse_database
    assert await rows(
        ch,
        f"SELECT campaign_id, currency, purchases, turnover FROM {db}.campaign_turnover WHERE universe = 'demo' ORDER BY turnover DESC",
    ) == [
        ("spring", "EUR", 3, Decimal("1700.5")),
        ("summer", "EUR", 1, Decimal("40")),
        ("", "USD", 1, Decimal("9.99")),
    ]
    assert await rows(
        ch,
        f"SELECT campaign_id, link_id, currency, purchases, turnover FROM {db}.link_turnover WHERE universe = 'demo' ORDER BY campaign_id, link_id",
    ) == [
        ("", "", "USD", 1, Decimal("9.99")),
        ("spring", "footer", "EUR", 1, Decimal("1500")),
        ("spring", "hero", "EUR", 2, Decimal("200.5")),
        ("summer", "hero", "EUR", 1, Decimal("40")),
    ]
    assert await rows(
        ch,
        f"SELECT customer_id, currency, purchases, turnover FROM {db}.customer_turnover WHERE universe = 'demo' ORDER BY customer_id",
    ) == [
        ("alice", "EUR", 2, Decimal("200.5")),
        ("bob", "EUR", 1, Decimal("1500")),
        ("carol", "EUR", 1, Decimal("40")),
    ]
    assert await rows(
        ch,
        f"SELECT * FROM {db}.customers_by_turnover(universe='demo', currency='EUR', min=100, max=1000)",
    ) == [("alice", 2, Decimal("200.5"))]
    assert await rows(
        ch,
        f"SELECT day, purchases, turnover FROM {db}.campaign_turnover_daily WHERE campaign_id = 'spring' AND currency = 'EUR' ORDER BY day",
    ) == [
        (date(2026, 1, 2), 2, Decimal("1620")),
        (date(2026, 1, 3), 1, Decimal("80.5")),
    ]
    assert await rows(ch, f"SELECT status, count() FROM {db}.sales_calls GROUP BY status ORDER BY status") == [
        ("counted", 5), ("duplicate", 1), ("rejected", 1)
    ]  # fmt: skip


async def test_rebuild_yields_identical_tables(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    clicks, sold = generate(seed=11, sales=800)
    calls = with_refunds(sold, seed=11)  # partial, full, duplicate, early, rejected refunds
    db = projector_settings.clickhouse_database
    refunds_sql = f"SELECT * FROM {db}.refunds ORDER BY universe, transaction_id, refund_id"
    async with live(projector_settings, ch) as feeder:
        await feeder.feed(clicks, calls)
        before = as_dict(await actual(ch, db))
        assert before["refund_calls"].keys() == {"counted", "duplicate", "rejected"}
        sales_before = await rows(
            ch, f"SELECT * FROM {db}.sales ORDER BY universe, transaction_id, event_id"
        )
        refunds_before = await rows(ch, refunds_sql)

        lines: list[str] = []
        generation = await rebuild(projector_settings, write=lines.append)

        assert generation == 2
        assert any("100.0%" in line for line in lines)
        assert await rows(ch, f"SELECT max(generation) FROM {db}.generations") == [(2,)]
        assert as_dict(await actual(ch, db)) == before == as_dict(oracle(clicks, calls))
        assert (
            await rows(ch, f"SELECT * FROM {db}.sales ORDER BY universe, transaction_id, event_id")
            == sales_before
        )
        assert await rows(ch, refunds_sql) == refunds_before

        # The live projector follows the new generation and keeps counting exactly.
        more: list[SaleCall | RefundCall] = [
            sale("late-1", "late-tx", amount="1.5", universe="shop_a"),
            refund("late-r", "late-tx", "late-rf", amount="0.5", universe="shop_a"),
        ]
        await feeder.send(more)
        assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls + more))


def before_currencies(sql: str) -> str:
    """A statement as the schema before per-currency rollups had it."""
    if "_rollup_g" not in sql and "customer_turnover\n" not in sql:
        return sql
    return (
        sql.replace("\n  AND currency = {currency:String}", "")
        .replace(", currency LowCardinality(String)", "")
        .replace(", currency", "")
    )


async def test_a_generation_without_per_currency_rollups_keeps_answering_until_a_rebuild(
    projector_settings: ProjectorSettings, ch: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="projector")
    db = projector_settings.clickhouse_database
    for sql in meta_statements(db):
        await ch.command(sql)
    await ch.command(f"INSERT INTO {db}.generations (generation) VALUES (1)")
    for sql in [*table_statements(db, 1), *view_statements(db, 1)]:
        await ch.command(before_currencies(sql))
    assert "currency" not in str(await rows(ch, f"DESCRIBE TABLE {db}.campaign_turnover"))
    calls = [
        sale("e1", "t1", amount="10", currency="EUR"),
        sale("e2", "t2", amount="10", currency="USD"),
    ]
    # Today's projector on it: it starts, counts, and leaves the old views as they were.
    await feed(projector_settings, ch, [], calls)
    assert await rows(
        ch, f"SELECT universe, campaign_id, purchases, turnover FROM {db}.campaign_turnover"
    ) == [("demo", "", 2, Decimal(20))]
    assert any("predates per-currency rollups" in r.getMessage() for r in caplog.records)

    assert await rebuild(projector_settings, write=lambda _: None) == 2
    assert await rows(
        ch,
        f"SELECT universe, campaign_id, currency, purchases, turnover FROM {db}.campaign_turnover ORDER BY currency",
    ) == [
        ("demo", "", "EUR", 1, Decimal(10)),
        ("demo", "", "USD", 1, Decimal(10)),
    ]
    assert as_dict(await actual(ch, db)) == as_dict(oracle([], calls))


async def test_tiny_batches_with_a_write_always_in_flight_count_exactly(
    projector_settings: ProjectorSettings, ch: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Batch N+1 is projected while batch N is written: a refresh in N+1 of a sale in N, and
    positions N has not stored yet, are taken from what N is writing (no needless rewind)."""
    caplog.set_level(logging.WARNING, logger="projector")
    settings = dataclasses.replace(projector_settings, batch_max=7)
    clicks, calls = generate(seed=13, sales=500)
    await produce(settings, clicks)
    await produce(settings, calls)
    await rebuild(settings, write=lambda _: None)
    db = settings.clickhouse_database
    assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls))
    assert not [r for r in caplog.records if "rewinding" in r.getMessage()]


async def test_a_sale_is_attributed_to_a_click_whose_write_is_still_in_flight(
    projector_settings: ProjectorSettings, ch: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The click's batch is held before ClickHouse (a gate on the real sink's flush) while
    the sale's batch is projected: the sale can only find the click in what that write
    carries."""
    gate = asyncio.Event()
    real_flush = ClickHouseSink.flush

    async def gated_flush(sink: ClickHouseSink) -> None:
        await gate.wait()
        await real_flush(sink)

    monkeypatch.setattr(ClickHouseSink, "flush", gated_flush)
    db = projector_settings.clickhouse_database
    async with running_projector(projector_settings) as projector:

        async def projected(topic: str) -> float:
            value = projector.metrics.registry.get_sample_value(
                "tracker_projector_events_total", {"topic": topic}
            )
            return value or 0.0

        topics = projector_settings.kafka.topics
        await produce(projector_settings, [click("c1", "alice", "spring", "spring-hero", at=T0)])
        await eventually(lambda: projected(topics.clicks), lambda n: n == 1)
        await produce(projector_settings, [sale("e1", "t1", customer_id="alice", at=T0 + 1)])
        await eventually(lambda: projected(topics.sales), lambda n: n == 1)
        assert await rows(ch, f"SELECT count() FROM {db}.clicks") == [(0,)]  # still held
        gate.set()
        await settled(ch, db, 2)
        assert await rows(ch, f"SELECT campaign_id, link_id FROM {db}.sales") == [
            ("spring", "spring-hero")
        ]
