"""The projector against the real broker and ClickHouse."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.asyncclient import AsyncClient

from helpers import eventually, read_topic, rows, running_projector
from projector import clickhouse
from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.settings import ProjectorSettings
from schemas.events import SaleCall, encode
from schemas.topics import ensure_topics


def call(event_id: str, transaction_id: str, amount_raw: str, **changes: str) -> SaleCall:
    accepted = changes.get("status", "accepted") == "accepted"
    fields: dict[str, object] = {
        "event_id": event_id,
        "received_at_ms": 1_767_225_600_000,
        "source": "pixel",
        "status": "accepted",
        "reason": "",
        "universe": "demo",
        "transaction_id": transaction_id,
        "amount": amount_raw.replace(",", ".") if accepted else "",
        "amount_raw": amount_raw,
        "currency": "",
        "customer_id": "",
        "click_id": "",
    }
    fields.update(changes)
    return SaleCall(**fields)  # type: ignore[arg-type]


async def produce(settings: ProjectorSettings, payloads: list[tuple[bytes, bytes]]) -> None:
    await ensure_topics(settings.kafka_bootstrap, settings.topics, partitions=4, replication=1)
    producer = AIOKafkaProducer(bootstrap_servers=list(settings.kafka_bootstrap), acks="all")
    await producer.start()
    try:
        for key, value in payloads:
            await producer.send_and_wait(settings.topics.sales, value, key=key)
    finally:
        await producer.stop()


async def project_until_caught_up(settings: ProjectorSettings) -> Projector:
    projector = Projector(settings, ProjectorMetrics())
    await asyncio.wait_for(projector.run(asyncio.Event(), burst=True), timeout=60)
    return projector


async def test_accepted_calls_become_sales_and_every_call_is_logged(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    events = [
        call("e1", "t1", "12,50", customer_id="c1", currency="EUR"),
        call("e2", "t2", "10000.00"),
        call("e3", "t3", "abc", status="rejected", reason="amount_malformed"),
    ]
    await produce(projector_settings, [(e.kafka_key(), encode(e)) for e in events])
    await project_until_caught_up(projector_settings)

    db = projector_settings.clickhouse_database
    assert await rows(
        ch,
        f"SELECT transaction_id, amount, customer_id, currency FROM {db}.sales ORDER BY transaction_id",
    ) == [
        ("t1", Decimal("12.5"), "c1", "EUR"),
        ("t2", Decimal("10000"), "", ""),
    ]
    assert await rows(
        ch,
        f"SELECT transaction_id, amount_raw, status, reason FROM {db}.sales_calls ORDER BY transaction_id",
    ) == [
        ("t1", "12,50", "accepted", ""),
        ("t2", "10000.00", "accepted", ""),
        ("t3", "abc", "rejected", "amount_malformed"),
    ]


async def test_undecodable_message_goes_to_dead_letters_and_the_partition_moves_on(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    good = call("e1", "t1", "5")
    # One key: both land in one partition, the bad one first.
    await produce(projector_settings, [(b"k", b"{broken"), (b"k", encode(good))])
    projector = await project_until_caught_up(projector_settings)

    db = projector_settings.clickhouse_database
    assert await rows(ch, f"SELECT transaction_id FROM {db}.sales") == [("t1",)]
    dead = await read_topic(
        projector_settings.kafka_bootstrap[0], projector_settings.topics.dead_letters, 1
    )
    assert len(dead) == 1
    assert dead[0].value == b"{broken"
    headers = dict(dead[0].headers)
    assert headers["reason"].startswith(b"not JSON")
    assert headers["source"].startswith(projector_settings.topics.sales.encode() + b"[")
    assert projector.metrics.dead_letters._value.get() == 1


async def test_committed_offsets_are_not_projected_again_after_a_restart(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    await produce(projector_settings, [(b"k1", encode(call("e1", "t1", "1")))])
    await project_until_caught_up(projector_settings)
    await produce(projector_settings, [(b"k2", encode(call("e2", "t2", "2")))])
    await project_until_caught_up(projector_settings)

    db = projector_settings.clickhouse_database
    assert await rows(ch, f"SELECT count(), sum(amount) FROM {db}.sales") == [(2, Decimal(3))]


async def test_schema_creation_is_idempotent(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    db = projector_settings.clickhouse_database
    await clickhouse.create_schema(ch, db)
    await clickhouse.create_schema(ch, db)
    tables = await rows(ch, f"SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name")
    assert tables == [("sales",), ("sales_calls",)]


async def test_running_projector_shows_a_sale_within_seconds(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    db = projector_settings.clickhouse_database
    async with running_projector(projector_settings):
        await produce(projector_settings, [(b"k", encode(call("e1", "t1", "7,25")))])
        found = await eventually(lambda: _sales(ch, db), lambda r: bool(r), timeout=30)
    assert found == [("t1", Decimal("7.25"))]


async def _sales(ch: AsyncClient, db: str) -> list[tuple[object, ...]]:
    try:
        return await rows(ch, f"SELECT transaction_id, amount FROM {db}.sales")
    except Exception:  # the projector may not have created the schema yet
        return []
