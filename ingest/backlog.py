"""What waits to be published, in the order received: the in-memory queue, then the spool.

:meth:`Backlog.publish` (the request path) appends to the queue while the broker is healthy
and nothing is spooled, otherwise to the on-disk spool, so that events reach Kafka in the
order they were received. The sender (``ingest/sender.py``) takes from the queue and the
spool and moves what it could not send back here; the spool's format is ``ingest/spool.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path

from ingest.message import Message
from ingest.metrics import EdgeMetrics
from ingest.settings import EdgeSettings
from ingest.spool import Record, Spool, SpoolFull

# The publisher's log lines keep the logger they always had: logs are searched by it.
logger = logging.getLogger("ingest.publisher")


class Backlog:
    def __init__(self, settings: EdgeSettings, metrics: EdgeMetrics, spool_dir: Path) -> None:
        self._settings = settings
        self._metrics = metrics
        self._queue: deque[Message] = deque()
        # Taken from the queue, not yet acknowledged: spooled again if the task fails.
        self._in_flight: list[Message] = []
        self._topics = frozenset(settings.kafka.topics.all())
        self._spool = Spool(
            spool_dir, max_bytes=settings.spool_max_bytes, on_damage=self._count_damage
        )
        self._wakeup = asyncio.Event()
        self._healthy = False
        self._last_drop_log = 0.0

    # -- the request path ----------------------------------------------------------------------

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue one message; never blocks, never raises."""
        message = Message(topic, key, value)
        if self._healthy and self._spool.empty() and len(self._queue) < self._settings.queue_max:
            self._queue.append(message)
        else:
            self._spool_messages([message])
        self._wakeup.set()

    # -- state for /readyz and /metrics --------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def spool_bytes(self) -> int:
        return self._spool.pending_bytes

    # -- the spool -----------------------------------------------------------------------------

    def _spool_unsent(self) -> None:
        """Move the batch in flight and the queue, in this order, to the spool."""
        unsent = self._in_flight + list(self._queue)
        self._in_flight = []
        self._queue.clear()
        if unsent:
            self._spool_messages(unsent)
        self._metrics.queue_depth.set(0)

    def _spool_messages(self, messages: list[Message]) -> None:
        for message in messages:
            try:
                self._spool.append(message.pack())
                self._metrics.spooled.inc()
            except SpoolFull:
                self._metrics.dropped.inc()
                now = time.monotonic()
                if now - self._last_drop_log > 1.0:
                    self._last_drop_log = now
                    logger.error(
                        "spool full (%d bytes): events are being dropped", self._spool.pending_bytes
                    )
        self._metrics.spool_bytes.set(self._spool.pending_bytes)

    def _decode(self, records: list[Record]) -> list[Message]:
        """The spooled records as messages; one that is not a message of ours is moved aside."""
        messages = []
        for record in records:
            try:
                message = Message.unpack(record.payload)
            except ValueError as e:
                self._spool.quarantine(record, str(e))
                continue
            if message.topic not in self._topics:
                self._spool.quarantine(record, f"unknown topic {message.topic!r}")
                continue
            messages.append(message)
        return messages

    def _count_damage(self, kind: str, size: int) -> None:
        self._metrics.spool_damaged.labels(kind).inc()
        self._metrics.spool_damaged_bytes.labels(kind).inc(size)

    async def _sync_spool(self) -> None:
        interval = self._settings.spool_sync_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self._spool.sync()
