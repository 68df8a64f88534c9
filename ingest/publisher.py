"""Publishing off the request path: handlers append to a queue, one task sends batches.

The handler never awaits the broker: it appends an already-encoded message and returns. The
background task connects (retrying while the broker is away), sends what is queued in
batches and waits for the acknowledgements; a batch that fails goes back to the front of the
queue, in order, and is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingest.metrics import EdgeMetrics
from ingest.settings import EdgeSettings
from schemas.topics import ensure_topics

logger = logging.getLogger(__name__)

BATCH_MAX = 5000
BACKOFF_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes
    value: bytes


class Publisher:
    def __init__(self, settings: EdgeSettings, metrics: EdgeMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._queue: deque[Message] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    @property
    def depth(self) -> int:
        return len(self._queue)

    def full(self) -> bool:
        return len(self._queue) >= self._settings.queue_max

    def publish(self, topic: str, key: bytes, value: bytes) -> bool:
        """Queue one message; False (counted, logged) if the queue is full."""
        if len(self._queue) >= self._settings.queue_max:
            self._metrics.dropped.inc()
            logger.error("publish queue full (%d): event dropped", len(self._queue))
            return False
        self._queue.append(Message(topic, key, value))
        self._wakeup.set()
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="publisher")

    async def close(self) -> None:
        """Send what is queued (bounded by the drain timeout), then stop the producer."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=self._settings.drain_timeout_s)
            except TimeoutError:
                logger.error("drain timed out with %d events unsent", len(self._queue))
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _connect(self) -> AIOKafkaProducer:
        s = self._settings
        backoff = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=list(s.kafka_bootstrap),
                acks="all",
                enable_idempotence=s.kafka_idempotence,
                compression_type=s.kafka_compression,
                linger_ms=s.kafka_linger_ms,
                max_batch_size=s.kafka_batch_bytes,
            )
            try:
                await ensure_topics(
                    s.kafka_bootstrap,
                    s.topics,
                    partitions=s.kafka_partitions,
                    replication=s.kafka_replication,
                )
                await producer.start()
                logger.info("connected to Kafka at %s", ",".join(s.kafka_bootstrap))
                return producer
            except (KafkaError, OSError) as e:
                await producer.stop()
                if self._closing:
                    raise
                logger.warning("Kafka unreachable (%s); queueing, retry in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _run(self) -> None:
        try:
            self._producer = await self._connect()
        except (KafkaError, OSError):
            logger.error("closing without a broker: %d events unsent", len(self._queue))
            return
        backoff = 0.2
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH_MAX, len(self._queue)))]
            self._metrics.queue_depth.set(len(self._queue))
            failed = await self._send(batch)
            if failed:
                self._queue.extendleft(reversed(failed))
                self._metrics.publish_errors.inc()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            else:
                backoff = 0.2

    async def _send(self, batch: list[Message]) -> list[Message]:
        """Send a batch and wait for every acknowledgement; return the messages that failed."""
        assert self._producer is not None
        started = time.perf_counter()
        futures: list[asyncio.Future[object]] = []
        unsent: list[Message] = []
        try:
            for m in batch:
                futures.append(await self._producer.send(m.topic, m.value, key=m.key))
        except KafkaError as e:
            # Everything from here on never reached the producer's buffer.
            logger.warning("publish failed before send: %s", e)
            unsent = batch[len(futures) :]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [m for m, r in zip(batch, results, strict=False) if isinstance(r, BaseException)]
        sent: dict[str, int] = {}
        for message, result in zip(batch, results, strict=False):
            if not isinstance(result, BaseException):
                sent[message.topic] = sent.get(message.topic, 0) + 1
        for topic, count in sent.items():
            self._metrics.published.labels(topic).inc(count)
        failed += unsent
        if failed:
            logger.warning("%d of %d events failed to publish; retrying", len(failed), len(batch))
        self._metrics.publish_latency.observe(time.perf_counter() - started)
        return failed
