"""Raw events (schema version 2) against the real broker and ClickHouse, with exact numbers.

The edge publishes calls and clicks as received; the projector reads them with the rules in
force. These tests show that the raw path yields the very tables the typed path does, that
logs written before (version 1) still project as they did, that both mix in one log, and
that a rebuild under changed rules re-reads history.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.asyncclient import AsyncClient

from helpers import Publishable, produce, rows, running_projector, settled
from projector.rebuild import rebuild
from projector.settings import ProjectorSettings
from scenario import (
    DAY_MS,
    T0,
    Expected,
    actual,
    as_dict,
    as_published,
    as_raw,
    click,
    click_as_raw,
    generate,
    oracle,
)
from schemas.events import ClickContext, decode_click, decode_sale
from schemas.raw import ClickRequest, SaleRequest
from schemas.rules import Rules
from schemas.signing import make_v1_token
from schemas.topics import Topics, ensure_topics

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


async def project(
    settings: ProjectorSettings, ch: AsyncClient, *parts: Sequence[Publishable]
) -> None:
    """Publish each part in turn (clicks before the sales they precede, as in life), with a
    live projector running, and wait until every event has its ledger row."""
    sent = 0
    async with running_projector(settings):
        for part in parts:
            await produce(settings, part)
            sent += len(part)
            await settled(ch, settings.clickhouse_database, sent)


async def status_counts(ch: AsyncClient, db: str) -> list[tuple[object, ...]]:
    return await rows(
        ch,
        f"SELECT status, reason, count() FROM {db}.sales_calls GROUP BY status, reason "
        "ORDER BY status, reason",
    )


# -- a rebuild applies changed rules to history -----------------------------------------------


async def test_a_rebuild_under_new_rules_counts_calls_rejected_before(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    settings = projector_settings
    db = settings.clickhouse_database
    long_a, long_b, long_c = "a" * 200, "b" * 200, "c" * 200

    def pixel(event_id: str, query: str, at: int = T0) -> SaleRequest:
        return SaleRequest(event_id=event_id, received_at_ms=at, source="pixel", query=query)

    raws: list[Publishable] = [
        pixel("e1", f"universe=demo&amount=12,50&id={long_a}"),
        pixel("e2", f"universe=demo&amount=12,50&id={long_a}", T0 + 1000),  # a refresh
        pixel("e3", f"universe=demo&amount=7&id={long_b}&customer=alice"),
        pixel("e4", "universe=demo&amount=1&id=t4"),
        pixel("e5", "universe=demo&amount=2&id=" + "x" * 300),  # too long for both rules
        SaleRequest(
            event_id="e6",
            received_at_ms=T0,
            source="api",
            fields={"universe": "demo", "amount": "3.25", "id": long_c},
        ),
    ]
    await project(settings, ch, raws)
    assert await status_counts(ch, db) == [("counted", "", 1), ("rejected", "id_invalid", 5)]
    assert await rows(ch, f"SELECT purchases, turnover FROM {db}.campaign_turnover") == [
        (1, Decimal(1))
    ]

    lines: list[str] = []
    longer = dataclasses.replace(settings, rules=Rules(id_max_length=256))
    assert await rebuild(longer, write=lines.append) == 2

    assert await status_counts(ch, db) == [
        ("counted", "", 4),
        ("duplicate", "transaction_already_counted", 1),
        ("rejected", "id_invalid", 1),
    ]
    assert await rows(
        ch, f"SELECT transaction_id, amount, event_id FROM {db}.sales ORDER BY transaction_id"
    ) == [
        (long_a, Decimal("12.5"), "e1"),
        (long_b, Decimal(7), "e3"),
        (long_c, Decimal("3.25"), "e6"),
        ("t4", Decimal(1), "e4"),
    ]
    assert await rows(
        ch,
        f"SELECT universe, campaign_id, currency, purchases, turnover FROM {db}.campaign_turnover",
    ) == [("demo", "", "", 4, Decimal("23.75"))]
    assert await rows(ch, f"SELECT customer_id, purchases, turnover FROM {db}.customer_turnover") == [
        ("alice", 1, Decimal(7))
    ]  # fmt: skip


# -- logs written before version 2 -------------------------------------------------------------


def expected_from_json(data: dict[str, Any]) -> Expected:
    """The committed totals back in the oracle's shape."""
    out = Expected(sales=data["sales"])
    out.calls.update(data["calls"])
    for name in ("campaign", "customer", "link", "daily"):
        table = getattr(out, name)
        for *key, count, turnover in data[name]:
            table[tuple(key)] = [count, Decimal(turnover)]
            # The fixture predates refunds: gross is net.
            out.gross[name][tuple(key)] = [count, Decimal(turnover)]
    return out


async def publish_exact(settings: ProjectorSettings, records: list[dict[str, str]]) -> None:
    """Publish the fixture's records byte for byte (never re-encoded by today's code)."""
    await ensure_topics(
        settings.kafka.bootstrap, settings.kafka.topics,
        partitions=settings.kafka.partitions, replication=settings.kafka.replication,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=list(settings.kafka.bootstrap), acks="all")
    await producer.start()
    try:
        topics = {"clicks": settings.kafka.topics.clicks, "sales": settings.kafka.topics.sales}
        futures = [
            await producer.send(topics[r["topic"]], r["value"].encode(), key=r["key"].encode())
            for r in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_an_old_version_1_log_projects_to_the_same_tables(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    """``tests/fixtures/v1_log.jsonl``: typed events as the edge wrote them before, committed
    with their totals (``make_v1_log.py``)."""
    settings = projector_settings
    db = settings.clickhouse_database
    records = [orjson.loads(line) for line in (FIXTURES / "v1_log.jsonl").read_bytes().splitlines()]
    committed = expected_from_json(orjson.loads((FIXTURES / "v1_log_expected.json").read_bytes()))
    clicks = [decode_click(r["value"].encode()) for r in records if r["topic"] == "clicks"]
    calls = [decode_sale(r["value"].encode()) for r in records if r["topic"] == "sales"]
    assert {c.v for c in clicks} == {c.v for c in calls} == {1}

    sent = 0
    async with running_projector(settings):
        for topic in ("clicks", "sales"):
            part = [r for r in records if r["topic"] == topic]
            await publish_exact(settings, part)
            sent += len(part)
            await settled(ch, db, sent)

    assert as_dict(await actual(ch, db)) == as_dict(committed) == as_dict(oracle(clicks, calls))
    assert await rows(ch, f"SELECT count() FROM {db}.dead_letters") == [(0,)]


# -- the raw path gives the typed path's tables ------------------------------------------------


async def ledger(ch: AsyncClient, db: str) -> dict[str, list[tuple[object, ...]]]:
    """The ledger, but for what names the topic or fingerprints the message's bytes (the
    partition and offset stay: the same keys, in the same order)."""
    other = "EXCEPT (kafka_topic, kafka_fingerprint)"
    return {
        "sales_calls": await rows(ch, f"SELECT * {other} FROM {db}.sales_calls ORDER BY event_id"),
        "clicks": await rows(ch, f"SELECT * {other} FROM {db}.clicks ORDER BY event_id"),
        "sales": await rows(ch, f"SELECT * FROM {db}.sales ORDER BY universe, transaction_id, event_id"),
    }  # fmt: skip


async def test_raw_events_give_the_typed_events_tables(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    """One scenario projected twice, as typed events and as raw requests (percent-encoded
    queries, signed cookies, signed link queries): the same ledger, the oracle's totals."""
    raw_settings = projector_settings
    secret = raw_settings.secret
    clicks, generated = generate(seed=17, sales=400, customers=100)
    calls = as_published(generated)
    carried = sum(1 for c in calls if c.clicked_at_ms)
    assert carried > 10  # the scenario does exercise cookies

    typed_db = raw_settings.clickhouse_database + "_typed"
    typed_settings = dataclasses.replace(
        raw_settings, clickhouse_database=typed_db,
        kafka=dataclasses.replace(raw_settings.kafka, topics=Topics(f"{typed_db}.")),
        group_id=f"{typed_db}-projector",
    )  # fmt: skip
    try:
        await project(typed_settings, ch, clicks, calls)
        sent = 0
        async with running_projector(raw_settings) as projector:
            for part in (
                [click_as_raw(c, secret) for c in clicks],
                [as_raw(c, secret) for c in calls],
            ):
                await produce(raw_settings, part)
                sent += len(part)
                await settled(ch, raw_settings.clickhouse_database, sent)
            contexts = projector.metrics.registry.get_sample_value(
                "tracker_projector_click_context_total", {"source": "cookie", "outcome": "valid"}
            )
        expected = as_dict(oracle(clicks, calls))
        assert as_dict(await actual(ch, raw_settings.clickhouse_database)) == expected
        assert as_dict(await actual(ch, typed_db)) == expected
        assert await ledger(ch, raw_settings.clickhouse_database) == await ledger(ch, typed_db)
        assert contexts == carried
    finally:
        await ch.command(f"DROP DATABASE IF EXISTS {typed_db}")


async def test_a_log_half_version_1_half_version_2_counts_exactly(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    """The upgrade: one scenario whose events alternate between the two versions, so a
    transaction's refresh may be of the other version than its first call."""
    settings = projector_settings
    secret = settings.secret
    clicks, generated = generate(seed=23, sales=400, customers=100)
    calls = as_published(generated)
    mixed_clicks: list[Publishable] = [
        click_as_raw(c, secret) if i % 2 else c for i, c in enumerate(clicks)
    ]
    mixed_calls: list[Publishable] = [
        as_raw(c, secret) if i % 2 else c for i, c in enumerate(calls)
    ]
    await project(settings, ch, mixed_clicks, mixed_calls)
    db = settings.clickhouse_database
    assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls))
    assert await rows(ch, f"SELECT count() FROM {db}.dead_letters") == [(0,)]


# -- what cannot be read -----------------------------------------------------------------------


async def test_unverifiable_raw_clicks_and_invalid_raw_calls_become_dead_letters(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    settings = projector_settings
    db = settings.clickhouse_database
    good = ClickRequest(
        event_id="c1", clicked_at_ms=T0, query=click_as_raw_query(settings.secret, "alice")
    )
    forged = ClickRequest(
        event_id="c2", clicked_at_ms=T0, query=click_as_raw_query("another-secret" * 3, "bob")
    )
    # A sale carrying a cookie signed with another secret: counted, without that context.
    foreign = make_v1_token(
        "another-secret" * 3, ClickContext("demo", "bob", "k", "l", "", T0, "cx")
    )
    sale = SaleRequest(
        event_id="e1", received_at_ms=T0 + DAY_MS, source="pixel",
        query="universe=demo&amount=5&id=t1&customer=alice", cookies=f"trk_demo={foreign}",
    )  # fmt: skip
    invalid = (b"demo\x1fe9", b'{"v":2,"event_id":"e9","source":"fax","received_at_ms":1}')
    async with running_projector(settings) as projector:
        await produce(settings, [good, forged])
        await settled(ch, db, 2)
        await produce(settings, [sale, invalid])
        await settled(ch, db, 4)
        forged_cookies = projector.metrics.registry.get_sample_value(
            "tracker_projector_click_context_total",
            {"source": "cookie", "outcome": "context_forged"},
        )
    assert forged_cookies == 1
    assert await rows(ch, f"SELECT event_id FROM {db}.clicks") == [("c1",)]
    assert await rows(ch, f"SELECT reason FROM {db}.dead_letters ORDER BY reason") == [
        ("click does not verify under today's rules: link_bad_signature",),
        ("invalid SaleRequest: Invalid enum value 'fax' - at `$.source`",),
    ]
    # Attributed from the stored click of its customer, not from the forged cookie.
    assert await rows(ch, f"SELECT campaign_id, link_id FROM {db}.sales") == [("k0", "l0")]


def click_as_raw_query(secret: str, customer: str) -> str:
    return click_as_raw(click("x", customer, "k0", "l0", at=T0, universe="demo"), secret).query
