"""The real edge under gray failures: a broker frozen (SIGSTOP) rather than gone, and a spool
that cannot take more (a real 1 MiB filesystem filled up, or the spool's bound reached).

Each test runs its own broker (Tansu on SeaweedFS) so that freezing it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder
from conftest import Services

from chaos.disk import segments_bytes, small_filesystem
from compose.processes import Service
from compose.settings import StackSettings
from compose.stack import Stack, free_ports_env, infrastructure
from helpers import eventually, metrics_text, read_topic, running_edge, sales_as_read, sample
from ingest.metrics import EdgeMetrics
from ingest.publisher import Publisher
from ingest.settings import EdgeSettings


@pytest.fixture
def own_broker(tmp_path: Path, services: Services) -> Iterator[tuple[str, Service]]:
    """A broker of the test's own (bootstrap, service); resumed if the test left it frozen."""
    own = StackSettings.from_env(
        {
            "TRACKER_DATA_DIR": str(tmp_path / "broker"),
            **free_ports_env(),
            "TRACKER_CLICKHOUSE_URL": services.clickhouse_url,  # no ClickHouse of its own
        }
    )
    store, broker = infrastructure(own)
    stack = Stack([store, broker], tmp_path / "logs")
    stack.start()
    try:
        yield own.kafka_bootstrap, broker
    finally:
        freeze(broker, False)
        stack.stop()


def freeze(broker: Service, frozen: bool) -> None:
    if broker.process is not None and broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def on(settings: EdgeSettings, bootstrap: str, **changes: object) -> EdgeSettings:
    kafka = dataclasses.replace(settings.kafka, bootstrap=(bootstrap,))
    return dataclasses.replace(settings, kafka=kafka, drain_timeout_s=90, **changes)  # type: ignore[arg-type]


async def readyz(session: aiohttp.ClientSession, base: str) -> tuple[int, str]:
    async with session.get(base + "/readyz") as response:
        return response.status, await response.text()


async def pixels(session: aiohttp.ClientSession, base: str, ids: range, concurrency: int) -> None:
    """Pixel calls ``o<i>`` for every i in ``ids``, each answered with the image."""
    pending = iter(ids)

    async def worker() -> None:
        for i in pending:
            url = f"{base}/sales.php?universe=demo&amount={i},{i % 100:02d}&id=o{i}"
            async with session.get(url) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/gif"
                await r.read()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def published_once_in_order(bootstrap: str, settings: EdgeSettings, count: int) -> None:
    """The topic holds ``o0`` .. ``o<count-1>``, each once, each partition in the order sent
    by one connection (ids ascending)."""
    records = await read_topic(bootstrap, settings.kafka.topics.sales, count, timeout=60)
    calls = sales_as_read(records, settings.secret)
    ids = [c.transaction_id for c in calls]
    assert sorted(ids) == sorted(f"o{i}" for i in range(count)), (len(ids), count)
    by_partition: dict[int, list[int]] = {}
    for record, call in zip(records, calls, strict=True):
        by_partition.setdefault(record.partition, []).append(int(call.transaction_id[1:]))
    for partition, sequence in by_partition.items():
        assert sequence == sorted(sequence), f"partition {partition} out of order"


async def test_a_frozen_broker_is_detected_in_seconds_and_its_late_batch_is_not_sent_twice(
    own_broker: tuple[str, Service], edge_settings: EdgeSettings
) -> None:
    bootstrap, broker = own_broker
    settings = on(edge_settings, bootstrap)
    async with running_edge(settings) as base, aiohttp.ClientSession() as session:
        await eventually(lambda: readyz(session, base), lambda r: r[0] == 200)
        await pixels(session, base, range(50), concurrency=1)
        freeze(broker, True)
        frozen_at = time.monotonic()
        try:
            await pixels(session, base, range(50, 60), concurrency=1)  # one batch in flight
            # Before, a frozen broker went unnoticed until a 15 s send timeout; the deadline
            # is 1 s (the bound is generous for a loaded machine).
            status = await eventually(
                lambda: readyz(session, base), lambda r: r[0] == 503, timeout=8
            )
            assert time.monotonic() - frozen_at < 8
            assert status[1].startswith("broker not acknowledging within 1 s"), status
            await pixels(session, base, range(60, 150), concurrency=1)
            # The late batch is on disk while still in flight, and nothing waits in memory.
            text = await eventually(
                lambda: metrics_text(session, base),
                lambda t: (
                    sample(t, "tracker_edge_inflight_copies_total") >= 1
                    and sample(t, "tracker_edge_queue_depth") == 0
                ),
            )
            assert sample(text, "tracker_edge_late_batches_total") >= 1
        finally:
            freeze(broker, False)
        await eventually(lambda: readyz(session, base), lambda r: r == (200, "ready\n"))
        text = await metrics_text(session, base)
    # Its late acknowledgement arrived: every copy passed over, none sent again.
    copies = sample(text, "tracker_edge_inflight_copies_total")
    assert sample(text, "tracker_edge_inflight_copies_skipped_total") == copies
    await published_once_in_order(bootstrap, settings, 150)


@pytest.mark.parametrize("limit", ["full disk", "spool bound"])
async def test_a_spool_that_takes_no_more_keeps_events_in_memory_and_loses_none(
    limit: str, tmp_path: Path, own_broker: tuple[str, Service], edge_settings: EdgeSettings
) -> None:
    bootstrap, broker = own_broker
    with small_filesystem(tmp_path / "disk", "1m") as disk:
        spool = disk if limit == "full disk" else tmp_path / "spool"
        bound = 2**30 if limit == "full disk" else 2**20  # TRACKER_EDGE_SPOOL_MAX_MB=1
        settings = on(edge_settings, bootstrap, spool_dir=spool, spool_max_bytes=bound)
        total = 6000  # about 1.5 MiB of spooled events: more than either limit
        async with running_edge(settings) as base, aiohttp.ClientSession() as session:
            await eventually(lambda: readyz(session, base), lambda r: r[0] == 200)
            freeze(broker, True)
            try:
                await pixels(session, base, range(total - 200), concurrency=16)
                # Memory holds what the spool refused; /readyz names the limit.
                status = await eventually(
                    lambda: readyz(session, base), lambda r: "events held in memory" in r[1]
                )
                text = await metrics_text(session, base)
                if limit == "full disk":
                    assert "the spool's disk is full or failing" in status[1], status
                    assert "No space left on device" in status[1], status
                    assert sample(text, 'tracker_edge_spool_errors_total{operation="write"}') > 0
                else:
                    assert "the spool is full" in status[1], status
                assert sample(text, "tracker_edge_queue_depth") > 0
                # What the edge says the spool holds is what is on disk.
                assert sample(text, "tracker_edge_spool_bytes") == segments_bytes(spool)
            finally:
                freeze(broker, False)
            await eventually(
                lambda: readyz(session, base), lambda r: r == (200, "ready\n"), timeout=60
            )
            # Spooling resumes by itself: a second freeze is spooled again, without errors.
            errors = sample(text, 'tracker_edge_spool_errors_total{operation="write"}')
            spooled = sample(await metrics_text(session, base), "tracker_edge_events_spooled_total")
            freeze(broker, True)
            try:
                await pixels(session, base, range(total - 200, total), concurrency=4)
                text = await eventually(
                    lambda: metrics_text(session, base),
                    lambda t: sample(t, "tracker_edge_events_spooled_total") >= spooled + 200,
                )
            finally:
                freeze(broker, False)
            assert sample(text, 'tracker_edge_spool_errors_total{operation="write"}') == errors
            await eventually(
                lambda: readyz(session, base), lambda r: r == (200, "ready\n"), timeout=60
            )
            text = await metrics_text(session, base)
        for reason in ("spool_full", "disk_error", "queue_full", "make_failed"):
            assert sample(text, f'tracker_edge_events_dropped_total{{reason="{reason}"}}') == 0
        assert sample(text, "tracker_edge_publisher_restarts_total") == 0
        assert sample(text, "tracker_edge_spool_bytes") == 0
        # Segments read to their end are gone, and no cursor.tmp was left behind.
        assert sorted(p.name for p in (spool / "worker-0").iterdir()) == ["cursor"]
    await published_once_in_order(bootstrap, settings, total)


async def test_a_late_batch_that_then_fails_is_sent_again_before_what_came_after_it(
    edge_settings: EdgeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker takes one batch and answers it only after the deadline, with a failure: the
    # batch was copied to the spool while in flight, the events after it went to the spool
    # behind the copy, and everything reaches the partition in the order published.
    original = AIOKafkaProducer.send_batch
    armed: list[bool] = []

    async def late_then_failed(
        producer: AIOKafkaProducer, builder: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[object]:
        if armed == [True]:
            armed.append(False)
            loop = asyncio.get_running_loop()
            answer: asyncio.Future[object] = loop.create_future()
            loop.call_later(1.5, answer.set_exception, KafkaTimeoutError("late, then failed"))
            return answer
        sent: asyncio.Future[object] = await original(producer, builder, topic, partition=partition)
        return sent

    monkeypatch.setattr(AIOKafkaProducer, "send_batch", late_then_failed)
    metrics = EdgeMetrics()
    publisher = Publisher(edge_settings, metrics, tmp_path)
    topic = edge_settings.kafka.topics.sales
    publisher.start()
    try:
        await eventually(lambda: asyncio.sleep(0, publisher.unready_reason()), lambda r: r is None)
        armed.append(True)
        for i in range(40):  # over 2 s, one key: one partition, one order
            publisher.publish(topic, b"k", b"%02d" % i)
            await asyncio.sleep(0.05)
        await eventually(lambda: asyncio.sleep(0, publisher.unready_reason()), lambda r: r is None)
    finally:
        await publisher.close()
    assert armed == [True, False]
    values = [r.value for r in await read_topic(edge_settings.kafka.bootstrap[0], topic, 40)]
    assert values == [b"%02d" % i for i in range(40)]
    assert (metrics.registry.get_sample_value("tracker_edge_inflight_copies_total") or 0) >= 1
    assert metrics.registry.get_sample_value("tracker_edge_inflight_copies_skipped_total") == 0
