"""A Kafka log that went backwards (topic recreated, broker storage lost or restored) is refused,
loudly, until an operator accepts the new log or rebuilds; nothing is skipped meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from clickhouse_connect.driver.asyncclient import AsyncClient

from compose.processes import free_port
from helpers import eventually, produce, read_topic, rows, running_projector, settled
from projector.accept import accept_log
from projector.dedupe import COUNTED
from projector.http import create_app
from projector.loop import Projector
from projector.rebuild import rebuild
from projector.rows import SALES_CALLS_COLUMNS, sales_call_row
from projector.settings import ProjectorSettings
from scenario import T0, actual, as_dict, click, generate, oracle, sale
from schemas.events import encode

ROOT = Path(__file__).resolve().parents[2]


async def recreate(settings: ProjectorSettings, topic: str) -> None:
    """Delete ``topic`` and create it again, empty, with as many partitions."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=list(settings.kafka.bootstrap), request_timeout_ms=10_000
    )
    await admin.start()
    try:
        await admin.delete_topics([topic])

        async def created() -> bool:
            try:
                await admin.create_topics(
                    [NewTopic(topic, settings.kafka.partitions, settings.kafka.replication)]
                )
            except KafkaError:
                return False  # the deletion is not through yet
            return True

        await eventually(created, bool, timeout=60)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def health_endpoint(projector: Projector) -> AsyncIterator[str]:
    """The projector's real HTTP app on a free port; yields the /readyz URL."""
    port = free_port()
    runner = web.AppRunner(create_app(projector))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/readyz"
    finally:
        await runner.cleanup()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def regressions(projector: Projector, tp: TopicPartition) -> float:
    value = projector.metrics.registry.get_sample_value(
        "tracker_projector_log_regressions_total",
        {"topic": tp.topic, "partition": str(tp.partition)},
    )
    return value or 0.0


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``python -m projector ARGS`` as an operator runs it: exit code, stdout, and the last
    line of stderr (where an error goes, after the client libraries' log lines)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projector", *args,
        cwd=ROOT, env={**os.environ, **env, "TRACKER_LOG_FORMAT": "text"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    lines = err.decode().splitlines()
    return process.returncode, out.decode(), lines[-1] if lines else ""


async def test_a_topic_recreated_under_a_running_projector_is_refused_until_the_log_is_accepted(
    projector_settings: ProjectorSettings, ch: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projector")
    settings = projector_settings
    db = settings.clickhouse_database
    topic = settings.kafka.topics.sales
    sales_partitions = {TopicPartition(topic, p) for p in range(settings.kafka.partitions)}
    clicks, calls = generate(seed=19, sales=400)
    old, new = calls[:200], calls[200:]
    late_click = click("late-click", "nobody-else", "autumn", "a-9", at=T0)

    async with running_projector(settings) as projector, health_endpoint(projector) as readyz:
        await produce(settings, clicks)
        await produce(settings, old)
        await settled(ch, db, len(clicks) + len(old))
        assert await get(readyz) == (200, "ready\n")

        await recreate(settings, topic)
        await asyncio.sleep(3)  # its fetches meet the new, empty log
        await produce(settings, new)

        async def refused() -> set[TopicPartition]:
            return set(projector.refused)

        await eventually(refused, lambda r: r == sales_partitions, timeout=120)
        status, text = await get(readyz)
        assert status == 503 and "log went backwards" in text
        for tp in sales_partitions:
            assert regressions(projector, tp) >= 1
            assert any(
                r.levelno == logging.ERROR
                and f"{tp.topic}[{tp.partition}]@" in r.getMessage()
                and "the log went backwards" in r.getMessage()
                and "expected (position" in r.getMessage()
                and "found (high watermark" in r.getMessage()
                for r in caplog.records
            )
        # The clicks topic is untouched: its partitions keep going.
        await produce(settings, [late_click])
        await eventually(
            lambda: rows(ch, f"SELECT count() FROM {db}.clicks WHERE event_id = 'late-click'"),
            lambda r: r == [(1,)],
        )
        # Nothing of the refused partitions is written (nor skipped: see the totals below).
        assert await rows(ch, f"SELECT count() FROM {db}.sales_calls") == [(len(old),)]

        lines: list[str] = []
        accepted = await accept_log(settings, write=lines.append)
        assert {a.tp for a in accepted} == sales_partitions
        assert {(a.epoch, a.start_offset) for a in accepted} == {(1, 0)}
        assert any(line.startswith(f"accepted {topic}[") for line in lines)

        await settled(ch, db, len(clicks) + 1 + len(calls), timeout=120)
        assert as_dict(await actual(ch, db)) == as_dict(oracle([*clicks, late_click], calls))
        await eventually(lambda: get(readyz), lambda r: r == (200, "ready\n"))


async def start_with_a_shorter_log(
    settings: ProjectorSettings, ch: AsyncClient
) -> tuple[TopicPartition, int]:
    """Ten sales of one key projected, then the topic recreated with three other sales of that
    key: the log of that partition ends below the position. Returns it and the new count."""
    db = settings.clickhouse_database
    first = [(b"same", encode(sale(f"a{i}", f"ta{i}", amount="10"))) for i in range(10)]
    async with running_projector(settings):
        await produce(settings, first)
        await settled(ch, db, len(first))
    [(partition,)] = await rows(ch, f"SELECT DISTINCT kafka_partition FROM {db}.sales_calls_g1")
    assert isinstance(partition, int)
    await recreate(settings, settings.kafka.topics.sales)
    second = [(b"same", encode(sale(f"b{i}", f"tb{i}", amount="1"))) for i in range(3)]
    await produce(settings, second)
    return TopicPartition(settings.kafka.topics.sales, partition), len(first) + len(second)


async def test_a_log_shorter_than_the_position_is_refused_at_start_and_accepted_by_the_cli(
    projector_settings: ProjectorSettings,
    service_env: dict[str, str],
    ch: AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="projector")
    settings = projector_settings
    db = settings.clickhouse_database
    tp, total = await start_with_a_shorter_log(settings, ch)
    where = f"{tp.topic}[{tp.partition}]"

    async with running_projector(settings) as projector:

        async def refused() -> set[TopicPartition]:
            return set(projector.refused)

        await eventually(refused, lambda r: r == {tp}, timeout=90)
        assert regressions(projector, tp) == 1
        assert projector.health is not None and f"{where}@10" in projector.health
        [error] = [r for r in caplog.records if "the log went backwards" in r.getMessage()]
        assert error.levelno == logging.ERROR
        assert "the log ends at 3 (high watermark), below the stored position 10" in (
            error.getMessage()
        )
        await asyncio.sleep(1)
        assert await rows(ch, f"SELECT count() FROM {db}.sales_calls") == [(10,)]

        assert await cli(service_env, "accept-log", "--topic", "nope", "--partition", "0") == (
            1, "",
            f"accept-log: unknown topic 'nope': the projector reads {settings.kafka.topics.clicks} "
            f"and {tp.topic}",
        )  # fmt: skip
        code, _, err = await cli(
            service_env, "accept-log", "--topic", tp.topic, "--partition", "99"
        )
        assert (code, err) == (
            1,
            f"accept-log: unknown partition {tp.topic}[99]: its partitions are 0, 1, 2, 3",
        )
        code, _, err = await cli(service_env, "accept-log", "--topic", tp.topic)
        assert code == 2 and "--topic and --partition go together" in err

        code, out, err = await cli(
            service_env, "accept-log", "--topic", tp.topic, "--partition", str(tp.partition)
        )
        assert code == 0, err
        assert out.splitlines()[0] == (
            f"accepted {where}: the log ends at 3 (high watermark), below the stored position "
            f"10; log epoch 1 starts at {where}@0 (generation 1)"
        )
        await settled(ch, db, total)
        assert await rows(ch, f"SELECT purchases, turnover FROM {db}.campaign_turnover") == [
            (13, Decimal(103))
        ]
        assert await rows(
            ch, f"SELECT log_epoch, count() FROM {db}.sales_calls_g1 GROUP BY 1 ORDER BY 1"
        ) == [(0, 10), (1, 3)]
        await eventually(lambda: asyncio.sleep(0, projector.health), lambda h: h is None)

        code, out, err = await cli(
            service_env, "accept-log", "--topic", tp.topic, "--partition", str(tp.partition)
        )
        assert (code, out) == (1, "")
        assert err == (
            f"accept-log: nothing to accept: the log of {where} holds what was written "
            "(generation 1)"
        )


async def test_a_refused_partition_resumes_against_a_rebuild_of_the_log_as_it_is(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    settings = projector_settings
    db = settings.clickhouse_database
    tp, _ = await start_with_a_shorter_log(settings, ch)
    async with running_projector(settings) as projector:

        async def refused() -> set[TopicPartition]:
            return set(projector.refused)

        await eventually(refused, lambda r: r == {tp}, timeout=90)
        assert await rebuild(settings, write=lambda _: None) == 2
        # The new generation holds the log as it is now: the three sales of the new log.
        assert await rows(ch, f"SELECT purchases, turnover FROM {db}.campaign_turnover") == [
            (3, Decimal(3))
        ]
        await eventually(refused, lambda r: r == set(), timeout=30)
        await produce(settings, [(b"same", encode(sale("c1", "tc1", amount="5")))])
        await eventually(
            lambda: rows(ch, f"SELECT purchases, turnover FROM {db}.campaign_turnover"),
            lambda r: r == [(4, Decimal(8))],
        )
        assert projector.ready


# The ledger and positions of generation 1 as the schema before log epochs created them.
LEGACY = [
    "CREATE DATABASE {db}",
    "CREATE TABLE {db}.generations (generation UInt32, activated_at DateTime64(3, 'UTC') "
    "DEFAULT now64(3)) ENGINE = MergeTree ORDER BY generation",
    "INSERT INTO {db}.generations (generation) VALUES (1)",
    """CREATE TABLE {db}.sales_calls_g1 (
        universe LowCardinality(String), transaction_id String, event_id String,
        source LowCardinality(String), status LowCardinality(String),
        reason LowCardinality(String), amount_raw String, amount Decimal(18, 4),
        currency LowCardinality(String), customer_id String, campaign_id String, link_id String,
        product LowCardinality(String), clicked_at Nullable(DateTime64(3, 'UTC')),
        received_at DateTime64(3, 'UTC'), client_hash String,
        kafka_topic LowCardinality(String), kafka_partition UInt32, kafka_offset UInt64
    ) ENGINE = MergeTree ORDER BY (universe, received_at, event_id)""",
    """CREATE TABLE {db}.clicks_g1 (
        universe LowCardinality(String), customer_id String, campaign_id String, link_id String,
        product LowCardinality(String), clicked_at DateTime64(3, 'UTC'), event_id String,
        client_hash String, kafka_topic LowCardinality(String), kafka_partition UInt32,
        kafka_offset UInt64
    ) ENGINE = MergeTree ORDER BY (universe, customer_id, clicked_at)""",
    """CREATE TABLE {db}.dead_letters_g1 (
        kafka_topic LowCardinality(String), kafka_partition UInt32, kafka_offset UInt64,
        reason String, payload String, seen_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = MergeTree ORDER BY (kafka_topic, kafka_partition, kafka_offset)""",
    """CREATE TABLE {db}.positions_g1 (
        kafka_topic LowCardinality(String), kafka_partition UInt32,
        next_offset SimpleAggregateFunction(max, UInt64)
    ) ENGINE = AggregatingMergeTree ORDER BY (kafka_topic, kafka_partition)""",
    *(
        f"CREATE MATERIALIZED VIEW {{db}}.positions_from_{view}_g1 TO {{db}}.positions_g1 AS "
        "SELECT kafka_topic, kafka_partition, max(kafka_offset) + 1 AS next_offset "
        f"FROM {{db}}.{table}_g1 GROUP BY kafka_topic, kafka_partition"
        for view, table in (
            ("sales", "sales_calls"),
            ("clicks", "clicks"),
            ("dead_letters", "dead_letters"),
        )
    ),
]


async def test_a_database_of_the_previous_schema_keeps_its_positions_without_fingerprints(
    projector_settings: ProjectorSettings, ch: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projector")
    settings = projector_settings
    db = settings.clickhouse_database
    calls = [sale(f"e{i}", f"t{i}", amount="2") for i in range(7)]
    await produce(settings, [(b"same", encode(call)) for call in calls])
    records = await read_topic(settings.kafka.bootstrap[0], settings.kafka.topics.sales, len(calls))
    partition = records[0].partition
    for sql in LEGACY:
        await ch.command(sql.replace("{db}", db))
    # The previous projector wrote the first five (and its views stored position 5).
    legacy = [
        sales_call_row(call, COUNTED, None, (settings.kafka.topics.sales, partition, i, 0, 0))[:-2]
        for i, call in enumerate(calls[:5])
    ]
    await ch.insert(f"{db}.sales_calls_g1", legacy, column_names=list(SALES_CALLS_COLUMNS[:-2]))

    async with running_projector(settings) as projector:
        await eventually(
            lambda: rows(ch, f"SELECT count() FROM {db}.sales_calls_g1"),
            lambda r: r == [(len(calls),)],
        )
        assert projector.ready
        await asyncio.sleep(1)  # time enough for a replay to show
    # Nothing replayed: the last two were written once, by the new projector, with fingerprints.
    assert await rows(
        ch,
        f"SELECT kafka_offset, log_epoch, kafka_fingerprint != 0 FROM {db}.sales_calls_g1 "
        "ORDER BY kafka_offset",
    ) == [(0, 0, False), (1, 0, False), (2, 0, False), (3, 0, False), (4, 0, False),
          (5, 0, True), (6, 0, True)]  # fmt: skip
    said = [r for r in caplog.records if "no fingerprint to compare" in r.getMessage()]
    assert (
        len(said) == 1 and f"{settings.kafka.topics.sales}[{partition}]@5" in said[0].getMessage()
    )
    assert await rows(
        ch, f"SELECT name FROM system.tables WHERE database = '{db}' AND name LIKE 'positions%'"
    ) == [("positions_g1",)]
