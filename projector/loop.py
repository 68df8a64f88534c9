"""The projector's main loop: fetch a batch, decode, add to the sink, checkpoint.

Checkpoint = flush ClickHouse, then commit the offsets. Offsets are committed only after
ClickHouse confirmed the write, so a crash at any point replays the batch instead of losing
it; the sink's idempotent inserts make the replay harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from clickhouse_connect.driver.asyncclient import AsyncClient

from projector import clickhouse
from projector.errors import ProjectorError
from projector.metrics import ProjectorMetrics
from projector.settings import ProjectorSettings
from projector.sink import ClickHouseSink
from schemas.events import EventDecodeError, decode_sale
from schemas.topics import ensure_topics

logger = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
T = TypeVar("T")

BACKOFF_MAX_S = 10.0


async def retrying(what: str, action: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    """Run ``action`` until it succeeds; retriable errors back off, others propagate."""
    backoff = 0.2
    while True:
        try:
            return await action()
        except ProjectorError as e:
            if not e.retriable or stop.is_set():
                raise
            logger.warning("%s failed (%s); retrying in %.1fs", what, e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)


def extent(batch: Batch) -> str:
    """The offsets a batch covers, as ``topic[partition]@first-last`` joined in order."""
    return ",".join(
        f"{tp.topic}[{tp.partition}]@{records[0].offset}-{records[-1].offset}"
        for tp, records in sorted(
            batch.items(), key=lambda item: (item[0].topic, item[0].partition)
        )
        if records
    )


class Projector:
    def __init__(self, settings: ProjectorSettings, metrics: ProjectorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ready = False

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Project until ``stop`` is set; with ``burst``, return once caught up (tests, rebuild)."""
        s = self.settings
        client: AsyncClient = await retrying(
            "connect to ClickHouse",
            lambda: clickhouse.connect(s.clickhouse_url, s.clickhouse_database),
            stop,
        )
        try:
            await retrying(
                "create schema",
                lambda: clickhouse.create_schema(client, s.clickhouse_database),
                stop,
            )
            await ensure_topics(
                s.kafka_bootstrap,
                s.topics,
                partitions=s.kafka_partitions,
                replication=s.kafka_replication,
            )
            consumer = AIOKafkaConsumer(
                s.topics.sales,
                bootstrap_servers=list(s.kafka_bootstrap),
                group_id=s.group_id,
                enable_auto_commit=False,
                # "latest" is unreliable on some brokers; a new group reads the whole log.
                auto_offset_reset="earliest",
                max_poll_records=s.batch_max,
            )
            dead_letters = AIOKafkaProducer(
                bootstrap_servers=list(s.kafka_bootstrap),
                acks="all",
                enable_idempotence=s.kafka_idempotence,
            )
            await consumer.start()
            await dead_letters.start()
            try:
                sink = ClickHouseSink(client, s.clickhouse_database, self.metrics)
                self.ready = True
                idle_rounds = 0
                logger.info("projecting %s as group %s", s.topics.sales, s.group_id)
                while not stop.is_set():
                    batch = await consumer.getmany(
                        timeout_ms=s.flush_interval_ms, max_records=s.batch_max
                    )
                    if not any(batch.values()):
                        idle_rounds += 1
                        if burst and idle_rounds >= 2 and await self._caught_up(consumer):
                            return
                        continue
                    idle_rounds = 0
                    await self._project(batch, sink, dead_letters)
                    await self._checkpoint(batch, sink, consumer, stop)
                    await self._record_lag(consumer)
            finally:
                self.ready = False
                await consumer.stop()
                await dead_letters.stop()
        finally:
            await client.close()

    async def _project(
        self, batch: Batch, sink: ClickHouseSink, dead_letters: AIOKafkaProducer
    ) -> None:
        events = 0
        for tp, records in batch.items():
            for record in records:
                events += 1
                try:
                    call = decode_sale(record.value)
                except EventDecodeError as e:
                    await self._dead_letter(dead_letters, record, str(e))
                    continue
                if call.status == "rejected":
                    self.metrics.rejects.labels(call.reason).inc()
                sink.add_sale_call(call, tp.partition, record.offset)
            self.metrics.events.labels(tp.topic).inc(len(records))
        self.metrics.batch_size.observe(events)

    async def _dead_letter(
        self, producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> None:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        logger.error("dead letter %s: %s", where, reason)
        headers = [
            ("reason", reason.encode()),
            ("source", where.encode()),
        ]
        await producer.send_and_wait(
            self.settings.topics.dead_letters, record.value, key=record.key, headers=headers
        )
        self.metrics.dead_letters.inc()

    async def _checkpoint(
        self, batch: Batch, sink: ClickHouseSink, consumer: AIOKafkaConsumer, stop: asyncio.Event
    ) -> None:
        started = time.perf_counter()
        span = extent(batch)
        await retrying("write to ClickHouse", lambda: sink.flush(span), stop)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        await consumer.commit(offsets)
        self.metrics.batch_latency.observe(time.perf_counter() - started)
        logger.debug("checkpoint %s", span)

    async def _caught_up(self, consumer: AIOKafkaConsumer) -> bool:
        """Every assigned partition read up to its high watermark (as of the last fetch)."""
        assignment = consumer.assignment()
        if not assignment:
            return False
        for tp in assignment:
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) < highwater:
                return False
        return True

    async def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - await consumer.position(tp))
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
