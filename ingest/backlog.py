"""What waits to be published, in the order received: the in-memory queue, then the spool.

:meth:`Backlog.publish` (the request path) appends to the queue while the broker is healthy
and nothing is spooled, otherwise to the on-disk spool, so that events reach Kafka in the
order they were received. The sender (``ingest/sender.py``) takes from the queue and the
spool and moves what it could not send back here; the spool's format is ``ingest/spool.py``.

:meth:`Backlog.publish_later` queues what a call carried and the pure function that makes its
message; the sender makes the messages of a whole batch in one loop, off the request path.
The same calls cost 13-19% less CPU per call that way in A/B pairs (docs/internals.md): a
loop over one function stays in the CPU's caches, which a request's trip through aiohttp
empties between two calls.
Being pure, a function may run twice for one call (a batch that failed while being made is
spooled from what the calls carried) and makes the same bytes both times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ingest.handler_errors import handler_failed
from ingest.message import Message
from ingest.metrics import EdgeMetrics
from ingest.settings import EdgeSettings
from ingest.spool import Record, Spool, SpoolFull

# The publisher's log lines keep the logger they always had: logs are searched by it.
logger = logging.getLogger("ingest.publisher")

T = TypeVar("T")
# A call queued by publish_later: the pure function that makes its message, what the call
# carried, and the endpoint a failure of the function is counted under. A plain tuple, the
# cheapest thing to build per call.
Deferred = tuple[Callable[[Any], Message], Any, str]
Entry = Message | Deferred
# A batch's messages are made (and the sender appends them to record batches) in this many
# steps, the event loop serving requests between two: made in one go, a batch held answers
# back (p99 at 16 connections 1.8 -> 2.9 ms). Steps of a fixed size fell behind: with 64
# connections or more, each pause lets a loop iteration take that many new calls, more than a
# step of 16 makes, so the queue grew (peak RSS 55 -> 104 MiB, p99 up to 13 ms). A fixed
# number of steps keeps up with any rate.
MAKE_STEPS = 4


class Backlog:
    def __init__(self, settings: EdgeSettings, metrics: EdgeMetrics, spool_dir: Path) -> None:
        self._settings = settings
        self._metrics = metrics
        self._queue: deque[Entry] = deque()
        # Taken from the queue, not yet acknowledged: spooled again if the task fails.
        self._in_flight: list[Entry] = []
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
        self._append(Message(topic, key, value))

    def publish_later(self, make: Callable[[T], Message], carried: T, *, endpoint: str) -> None:
        """Queue a call whose message ``make(carried)`` makes later, off the request path.

        ``make`` must be pure: it may run twice for one call. If it raises, the call is
        counted and logged as a failure of ``endpoint``'s handler and not published.
        """
        self._append((make, carried, endpoint))

    def _append(self, entry: Entry) -> None:
        if self._healthy and self._spool.empty() and len(self._queue) < self._settings.queue_max:
            self._queue.append(entry)
        else:
            self._spool_messages(self._made([entry]))
        self._wakeup.set()

    # -- state for /readyz and /metrics --------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def spool_bytes(self) -> int:
        return self._spool.pending_bytes

    # -- making messages -----------------------------------------------------------------------

    def _made(self, entries: Iterable[Entry]) -> list[Message]:
        """The entries' messages, in order; a call whose function fails is left out."""
        messages = []
        for entry in entries:
            message = entry if isinstance(entry, Message) else self._make(entry)
            if message is not None:
                messages.append(message)
        return messages

    async def _made_in_steps(
        self, entries: Sequence[Entry]
    ) -> AsyncIterator[tuple[int, list[Message]]]:
        """:meth:`_made` in MAKE_STEPS steps: each step's messages and the index of the entry
        after it. The event loop serves requests between two steps (the consumer's work on a
        step included)."""
        step = max(1, -(-len(entries) // MAKE_STEPS))
        for start in range(0, len(entries), step):
            if start:
                await asyncio.sleep(0)
            yield min(start + step, len(entries)), self._made(entries[start : start + step])

    def _make(self, deferred: Deferred) -> Message | None:
        make, carried, endpoint = deferred
        try:
            return make(carried)
        except Exception as e:  # a bug: the call was answered, as when its handler fails
            handler_failed(self._metrics, endpoint, e, "answered, not published")
            return None

    # -- the spool -----------------------------------------------------------------------------

    def _spool_unsent(self) -> None:
        """Move the batch in flight and the queue, in this order, to the spool."""
        unsent = self._made(self._in_flight) + self._made(self._queue)
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
