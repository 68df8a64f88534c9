"""Shared test tools: run the real edge and projector in-process, read topics and tables."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from clickhouse_connect.driver.asyncclient import AsyncClient

from bench.workload import refund_as_raw
from ingest.app import create_runner
from ingest.settings import EdgeSettings
from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.settings import ProjectorSettings
from schemas.events import Click, SaleCall, decode_click, decode_sale, encode
from schemas.raw import (
    ClickRequest,
    RefundRequest,
    SaleRequest,
    decode_click_request,
    decode_sale_request,
    encode_raw,
    kafka_key,
)
from schemas.refunds import RefundCall
from schemas.rules import Rules, parse_query
from schemas.topics import ensure_topics

T = TypeVar("T")


@dataclass(frozen=True)
class Edge:
    """A running edge (the ``edge`` fixture): its base URL and a client session for it."""

    base: str
    session: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def running_edge(settings: EdgeSettings) -> AsyncIterator[str]:
    """The real edge app on a real socket; yields its base URL. Exiting drains the queue."""
    runner = create_runner(settings)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_projector(settings: ProjectorSettings) -> AsyncIterator[Projector]:
    """The real projector loop as a task; exiting stops it the way SIGTERM does."""
    projector = Projector(settings, ProjectorMetrics())
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        yield projector
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def sales_as_read(
    records: Sequence[ConsumerRecord[bytes, bytes]], secret: str, window_ms: int = 30 * 86_400_000
) -> list[SaleCall]:
    """What the projector reads from the sales records the edge published: a raw call
    (schema version 2) interpreted with today's rules, or a version-1 event as it is."""
    from projector.interpret import interpret_sale

    calls = []
    for record in records:
        raw = decode_sale_request(record.value)
        if raw is None:
            calls.append(decode_sale(record.value))
        else:
            calls.append(interpret_sale(raw, secret=secret, window_ms=window_ms, rules=Rules())[0])
    return calls


def clicks_as_read(records: Sequence[ConsumerRecord[bytes, bytes]], secret: str) -> list[Click]:
    """What the projector reads from the clicks records the edge published."""
    from projector.interpret import interpret_click

    clicks = []
    for record in records:
        raw = decode_click_request(record.value)
        if raw is None:
            clicks.append(decode_click(record.value))
        else:
            clicks.append(interpret_click(raw, secret=secret, rules=Rules()))
    return clicks


async def metrics_text(session: aiohttp.ClientSession, base: str) -> str:
    async with session.get(base + "/metrics") as response:
        return await response.text()


def sample(text: str, name: str) -> float:
    """The value of one sample (name with its labels) in a Prometheus text page; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 30.0
) -> T:
    """Poll ``probe`` until ``accept`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.2)


async def read_topic(
    bootstrap: str, topic: str, count: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Exactly ``count`` records of ``topic`` from the start, reading a little past to see extras."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = await eventually(
            lambda: _partitions(consumer, topic), lambda p: bool(p), timeout
        )
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        # One more fetch: anything beyond `count` means something was published twice.
        batch = await consumer.getmany(timeout_ms=500)
        for part in batch.values():
            records.extend(part)
        return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()  # refreshes the metadata
    return consumer.partitions_for_topic(topic) or set()


async def rows(ch: AsyncClient, sql: str) -> list[tuple[object, ...]]:
    result = await ch.query(sql)
    return [tuple(row) for row in result.result_rows]


Publishable = (
    SaleCall | Click | SaleRequest | ClickRequest | RefundRequest | RefundCall | tuple[bytes, bytes]
)


def raw_kafka_key(event: SaleRequest | ClickRequest | RefundRequest) -> bytes:
    """The key the edge gives a raw event: as version 1's (universe + id or event id for a
    call, universe + customer for a click), read from what the request carried."""
    if isinstance(event, ClickRequest):
        link = dict(parse_qsl(event.query, keep_blank_values=True))
        return kafka_key(link.get("u", ""), link.get("c", ""))
    if isinstance(event, RefundRequest):  # its sale's key, as the edge gives it
        return kafka_key(event.fields.get("universe", ""), event.fields.get("id") or event.event_id)
    values = dict(event.fields) if event.source == "api" else parse_query(event.query)[0]
    return kafka_key(values.get("universe", ""), values.get("id", "") or event.event_id)


async def produce(settings: ProjectorSettings, events: Sequence[Publishable]) -> None:
    """Publish events of either version (or raw key/value pairs, to the sales topic) in
    order, acknowledged."""
    await ensure_topics(
        settings.kafka.bootstrap, settings.kafka.topics,
        partitions=settings.kafka.partitions, replication=settings.kafka.replication,
    )  # fmt: skip
    producer = AIOKafkaProducer(
        bootstrap_servers=list(settings.kafka.bootstrap), acks="all", linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for event in events:
            if isinstance(event, RefundCall):  # refunds have only their raw form
                event = refund_as_raw(event)  # noqa: PLW2901 - the event as published
            if isinstance(event, tuple):
                topic, (key, value) = settings.kafka.topics.sales, event
            elif isinstance(event, SaleRequest | ClickRequest | RefundRequest):
                clicks = isinstance(event, ClickRequest)
                topic = settings.kafka.topics.clicks if clicks else settings.kafka.topics.sales
                key, value = raw_kafka_key(event), encode_raw(event)
            else:
                topic = (
                    settings.kafka.topics.clicks
                    if isinstance(event, Click)
                    else settings.kafka.topics.sales
                )
                key, value = event.kafka_key(), encode(event)
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def settled(ch: AsyncClient, db: str, events: int, timeout: float = 60.0) -> None:
    """Wait until ``events`` events have their ledger row (calls, clicks or dead letters) and
    every view target has caught up with the ledger.

    ClickHouse commits an insert's ledger part before it pushes the block to the
    materialized views, so for a few milliseconds the ledger can be ahead of the rollups.
    """
    # Refunds: their ledger rows count as events, and the gross purchases (the net ones drop
    # with full refunds) and the refunds must have reached every rollup.
    sql = f"""
        SELECT
            (SELECT count() FROM {db}.sales_calls) + (SELECT count() FROM {db}.clicks)
              + (SELECT count() FROM {db}.dead_letters) + (SELECT count() FROM {db}.refunds_calls),
            (SELECT countIf(status = 'counted') FROM {db}.sales_calls),
            (SELECT countIf(status = 'counted' AND customer_id != '') FROM {db}.sales_calls),
            (SELECT count() FROM {db}.sales),
            (SELECT sum(gross_purchases) FROM {db}.campaign_turnover),
            (SELECT sum(gross_purchases) FROM {db}.link_turnover),
            (SELECT sum(gross_purchases) FROM {db}.campaign_turnover_daily),
            (SELECT sum(gross_purchases) FROM {db}.customer_turnover),
            (SELECT countIf(status = 'counted') FROM {db}.refunds_calls),
            (SELECT count() FROM {db}.refunds),
            (SELECT sum(refunds) FROM {db}.campaign_turnover),
            (SELECT sum(refunds) FROM {db}.link_turnover),
            (SELECT sum(refunds) FROM {db}.campaign_turnover_daily)
    """
    # A generation whose views predate refunds (kept until a rebuild) has none of them.
    old = f"""
        SELECT
            (SELECT count() FROM {db}.sales_calls) + (SELECT count() FROM {db}.clicks)
              + (SELECT count() FROM {db}.dead_letters),
            (SELECT countIf(status = 'counted') FROM {db}.sales_calls),
            (SELECT countIf(status = 'counted' AND customer_id != '') FROM {db}.sales_calls),
            (SELECT count() FROM {db}.sales),
            (SELECT sum(purchases) FROM {db}.campaign_turnover),
            (SELECT sum(purchases) FROM {db}.link_turnover),
            (SELECT sum(purchases) FROM {db}.campaign_turnover_daily),
            (SELECT sum(purchases) FROM {db}.customer_turnover), 0, 0, 0, 0, 0
    """

    async def state() -> tuple[int, ...]:
        for query in (sql, old):
            try:
                return tuple(int(v) for v in (await ch.query(query)).result_rows[0])
            except Exception:  # the projector may not have created the schema yet
                continue
        return (-1,)

    def done(s: tuple[int, ...]) -> bool:
        if len(s) < 13 or s[0] < events:
            return False
        _, counted, with_customer, sales, campaign, link, daily, customer = s[:8]
        refunds = s[8:]
        return (
            counted == sales == campaign == link == daily
            and customer == with_customer
            and len(set(refunds)) == 1
        )

    await eventually(state, done, timeout)
    if (n := (await state())[0]) != events:
        raise AssertionError(f"expected {events} ledger rows, found {n}")


def universes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m projector universes ARGS` as an operator runs it, with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "projector", "universes", *args],
        cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def universes_ok(env: dict[str, str], *args: str) -> list[str]:
    """Its output lines; fail unless it succeeded without a word on stderr."""
    result = universes(env, *args)
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout.splitlines()


def cells(row: list[str]) -> list[object]:
    """A row as comparable values: numbers as decimals, empty cells dropped (as
    docs/analysts.md shows them)."""
    out: list[object] = []
    for cell in row:
        if not cell:
            continue
        try:
            out.append(Decimal(cell))
        except InvalidOperation:
            out.append(cell)
    return out
