"""Fences against the real ClickHouse: a write under a fence that is no longer its partition's
latest changes no table, and a registration waits for a write that was admitted just before
it, so that the new owner's positions include it (projector/fencing.py,
docs/exactly-once.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition
from clickhouse_connect.driver.asyncclient import AsyncClient

from helpers import eventually
from projector.dedupe import COUNTED, CountedCache
from projector.fencing import Fencing
from projector.metrics import ProjectorMetrics
from projector.retry import Retrying
from projector.rows import click_row, sales_call_row
from projector.settings import ProjectorSettings
from projector.sink import ClickHouseSink
from projector.store import Store
from scenario import T0, click, sale

# What each table holds: every ledger, its derived tables and the rollups.
SNAPSHOT = (
    "SELECT (SELECT count() FROM {db}.sales_calls_g{g}), (SELECT count() FROM {db}.sales_g{g}), "
    "(SELECT sum(amount) FROM {db}.sales_g{g}), (SELECT count() FROM {db}.clicks_g{g}), "
    "(SELECT sum(purchases) FROM {db}.campaign_rollup_g{g}), "
    "(SELECT sum(turnover) FROM {db}.customer_rollup_g{g}), "
    "(SELECT sum(purchases) FROM {db}.link_rollup_g{g}), "
    "(SELECT sum(turnover) FROM {db}.campaign_daily_rollup_g{g}), "
    "(SELECT groupArray((kafka_topic, kafka_partition, last_written)) FROM "
    "(SELECT kafka_topic, kafka_partition, max(last_written) AS last_written "
    "FROM {db}.log_positions_g{g} GROUP BY ALL ORDER BY ALL))"
)


class Writer:
    """One projector instance's view of the store: its fences, and writes under them."""

    def __init__(self, store: Store, settings: ProjectorSettings, generation: int) -> None:
        self.store = store
        self.settings = settings
        self.generation = generation
        self.metrics = ProjectorMetrics()
        self.fencing = Fencing(
            store, Retrying(self.metrics, asyncio.Event()), self.metrics, CountedCache(10)
        )
        self.fences: dict[TopicPartition, int] = {}

    async def register(self, *tps: TopicPartition) -> float:
        """Register ``tps``; return how long the registration waited for writes in flight."""
        before = self._waited()
        self.fences.update(await self.fencing.register(self.generation, list(tps)))
        return self._waited() - before

    def _waited(self) -> float:
        total = self.metrics.registry.get_sample_value("tracker_projector_fence_wait_seconds_sum")
        return total or 0.0

    async def write(
        self, sales: TopicPartition, offsets: range, clicks: TopicPartition | None = None
    ) -> None:
        """Calls at ``offsets`` of ``sales`` (and clicks at the same offsets of ``clicks``),
        under this writer's fences, as the checkpoint writes a batch."""
        fences = {(tp.topic, tp.partition): f for tp, f in self.fences.items()}
        sink = ClickHouseSink(self.store, self.metrics, self.settings.kafka.topics.clicks, fences)
        sink.clear(self.generation)
        for offset in offsets:
            if clicks is not None:
                at = (clicks.topic, clicks.partition, offset, 0, 1 + offset)
                c = click(f"c{offset}", f"cust{offset}", "spring", "hero", at=T0 + offset)
                sink.add_click(click_row(c, at), at)
            call = sale(f"e{offset}", f"tx{offset}", amount="10.00", customer_id=f"cust{offset}")
            at = (sales.topic, sales.partition, offset, 0, 1 + offset)
            sink.add_call(sales_call_row(call, COUNTED, None, at), at)
        await sink.flush()


@pytest.fixture
async def store(projector_settings: ProjectorSettings, ch: AsyncClient) -> AsyncIterator[Store]:
    store = await Store.open(projector_settings)
    try:
        await store.prepare()
        yield store
    finally:
        await store.close()


def partitions(
    settings: ProjectorSettings,
) -> tuple[TopicPartition, TopicPartition, TopicPartition]:
    topics = settings.kafka.topics
    return (
        TopicPartition(topics.sales, 0),
        TopicPartition(topics.sales, 1),
        TopicPartition(topics.clicks, 0),
    )


async def snapshot(ch: AsyncClient, db: str) -> tuple[object, ...]:
    return tuple((await ch.query(SNAPSHOT.format(db=db, g=1))).result_rows[0])


async def test_a_write_under_a_fence_that_is_no_longer_the_latest_changes_no_table(
    store: Store, projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    db = projector_settings.clickhouse_database
    sales, other, clicks = partitions(projector_settings)
    zombie = Writer(store, projector_settings, 1)
    owner = Writer(store, projector_settings, 1)
    await zombie.register(sales, other, clicks)
    await zombie.write(sales, range(0, 5), clicks)
    before = await snapshot(ch, db)
    assert before[:2] == (5, 5)

    # The group gives `sales` and `clicks` to another instance, which registers them; the
    # first one still holds `other`.
    await owner.register(sales, clicks)
    await zombie.write(sales, range(5, 10), clicks)
    assert await snapshot(ch, db) == before  # no ledger, view, rollup or position moved

    # A block of both: the rows of the partition it still owns are admitted, not the others.
    fences = {(tp.topic, tp.partition): f for tp, f in zombie.fences.items()}
    sink = ClickHouseSink(store, zombie.metrics, projector_settings.kafka.topics.clicks, fences)
    sink.clear(1)
    for offset, tp in ((10, sales), (0, other)):
        call = sale(f"m{tp.partition}-{offset}", f"mtx{tp.partition}-{offset}")
        at = (tp.topic, tp.partition, offset, 0, 7)
        sink.add_call(sales_call_row(call, COUNTED, None, at), at)
    await sink.flush()
    mixed = await ch.query(
        f"SELECT kafka_partition, kafka_offset FROM {db}.sales_calls_g1 WHERE event_id LIKE 'm%'"
    )
    assert mixed.result_rows == [(1, 0)]

    # The new owner writes the same offsets: they count, once.
    await owner.write(sales, range(5, 10), clicks)
    after = await snapshot(ch, db)
    assert after[:4] == (11, 11, 110, 10)


async def test_two_registrations_with_the_same_sequence_number_let_only_one_write(
    store: Store, projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    """Two instances that read the same last sequence number at once register the same next
    one: the higher fence is the latest for every reader, so only one of them writes."""
    db = projector_settings.clickhouse_database
    sales, _, _ = partitions(projector_settings)
    low, high = Writer(store, projector_settings, 1), Writer(store, projector_settings, 1)
    await store.add_fences(1, [(sales, 7, 5), (sales, 7, 9)], "test")
    low.fences[sales], high.fences[sales] = 5, 9
    _, latest = await store.positions_and_fences(1, [sales])
    assert latest == {sales: 9}
    await low.write(sales, range(0, 3))
    await high.write(sales, range(0, 3))
    written = await ch.query(f"SELECT count() FROM {db}.sales_calls_g1")
    assert written.result_rows == [(3,)]


async def test_a_registration_waits_for_a_write_admitted_just_before_it(
    store: Store, projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    """The window a fence alone leaves: the old owner's block passed the fence just before the
    new owner registered, and is still being written (here: a view that sleeps, as a loaded
    server would) when the new owner reads positions. The registration waits for every write
    running when it landed, so the positions it is followed by include that block."""
    db = projector_settings.clickhouse_database
    sales, _, _ = partitions(projector_settings)
    old, new = Writer(store, projector_settings, 1), Writer(store, projector_settings, 1)
    await old.register(sales)
    # Sleeps 0.5 s a row in the old owner's insert, after the fence admitted its rows.
    await ch.command(f"CREATE TABLE {db}.slow_g1 (kafka_offset UInt64) ENGINE = Null")
    await ch.command(
        f"CREATE MATERIALIZED VIEW {db}.slow_from_intake_g1 TO {db}.slow_g1 AS "
        f"SELECT kafka_offset FROM {db}.sales_intake_g1 WHERE sleepEachRow(0.5) = 0"
    )
    writing = asyncio.create_task(old.write(sales, range(0, 4)))
    try:
        await eventually(lambda: store.writes_in_flight(1), bool)
        await asyncio.sleep(0.2)  # the block is past the fence, into the sleeping view
        # The window is open: positions do not show the block yet.
        assert await store.positions(1, [sales]) == {}

        waited = await new.register(sales)
        positions = await store.positions(1, [sales])
        assert sales in positions, "the new owner read positions without the old owner's block"
        assert positions[sales].next_offset == 4  # the old owner's block, read by the new one
        assert writing.done()
        assert waited > 0.5
    finally:
        await writing
    # It was admitted: the fence it carried was the latest when ClickHouse checked it.
    written = await ch.query(f"SELECT count() FROM {db}.sales_calls_g1")
    assert written.result_rows == [(4,)]
