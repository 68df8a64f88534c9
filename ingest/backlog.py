"""What waits to be published, in the order received: the spool (oldest), then memory.

The request path only appends to memory (:meth:`Backlog.publish`, :meth:`Backlog.publish_later`),
never to the disk. The spool task (:meth:`Backlog._keep_spool`) moves memory's oldest events
to the spool's tail when they are due there (``ingest/flight.py`` ``spill_due``): at once
while the broker does not acknowledge in time, else only those that waited longer than the
deadline. The sender (``ingest/sender.py``) sends the spool's oldest records first, and
memory's only once the spool holds none. So the backlog is one queue, spool then memory, and
every event reaches the broker after every event received before it: a key's events all take
this one path, in order. A batch taken from memory whose acknowledgement is late is copied to
the spool (ahead of anything moved there after it) while it stays in flight.

Memory is the last buffer: while the spool is full (TRACKER_EDGE_SPOOL_MAX_MB) or its disk
fails, events stay in memory, up to TRACKER_EDGE_QUEUE_MAX, and the spool is tried again a
second later. Only beyond both is an event dropped: counted in
``tracker_edge_events_dropped_total{reason}`` and logged, at most once a second.

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
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from ingest.flight import Flight, spill_due
from ingest.handler_errors import handler_failed
from ingest.message import Message
from ingest.metrics import MAKE_FAILED, QUEUE_FULL, EdgeMetrics
from ingest.settings import EdgeSettings
from ingest.spool import SPOOL_FULL, Appended, Record, Refusal, Spool
from ingest.spool_cursor import Cursor
from ingest.throttled_log import ThrottledLog
from ingest.types import Deferred, Entry

# The publisher's log lines keep the logger they always had: logs are searched by it.
logger = logging.getLogger("ingest.publisher")

__all__ = ["MAKE_STEPS", "Backlog", "Deferred", "Entry"]

T = TypeVar("T")
# A batch's messages are made (and the sender appends them to record batches) in this many
# steps, the event loop serving requests between two: made in one go, a batch held answers
# back (p99 at 16 connections 1.8 -> 2.9 ms). Steps of a fixed size fell behind: with 64
# connections or more, each pause lets a loop iteration take that many new calls, more than a
# step of 16 makes, so the queue grew (peak RSS 55 -> 104 MiB, p99 up to 13 ms). A fixed
# number of steps keeps up with any rate.
MAKE_STEPS = 4
# Events moved to the spool per step of the spool task (the event loop serves requests
# between two): about 5 ms of making and writing.
SPILL_STEP: Final = 1000
# After the spool refused events (full, disk failing), memory holds them this long before
# the spool is tried again.
REFUSAL_RETRY_S: Final = 1.0


class Backlog:
    def __init__(self, settings: EdgeSettings, metrics: EdgeMetrics, spool_dir: Path) -> None:
        self._settings = settings
        self._metrics = metrics
        self._deadline_s = settings.ack_deadline_ms / 1000
        self._queue: deque[Entry] = deque()
        # Taken by the sender, not yet resolved: copied to the spool when late, put back at
        # memory's head if the task fails.
        self._flight: Flight | None = None
        self._topics = frozenset(settings.kafka.topics.all())
        self._spool = Spool(
            spool_dir,
            max_bytes=settings.spool_max_bytes,
            on_damage=self._count_damage,
            on_disk_error=self._disk_failed,
        )
        self._wakeup = asyncio.Event()  # something to send
        self._spill_now = asyncio.Event()  # a batch is late: copy it without waiting a tick
        # The sender's view of the broker: connected, and the last batch acknowledged within
        # the deadline. Until then memory goes to the spool at every tick.
        self._connected = False
        self._broker_ok = False
        # Why the spool last refused events, while memory holds what it refused.
        self._refusal: Refusal | None = None
        self._refused_at = -math.inf
        # The last time memory was seen empty: no event in it is older.
        self._memory_clear_at = time.monotonic()
        self._drops_log = ThrottledLog(logger, logging.ERROR, "drops of events", 1.0)
        self._disk_log = ThrottledLog(logger, logging.ERROR, "spool disk errors", 1.0)
        self._refusals_log = ThrottledLog(logger, logging.WARNING, "spool refusals", 10.0)
        self._task_log = ThrottledLog(logger, logging.ERROR, "spool task failures", 10.0)

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
        if len(self._queue) < self._settings.queue_max:
            self._queue.append(entry)
            self._wakeup.set()
        else:
            self._drop(1, self._refusal.reason if self._refusal else QUEUE_FULL)

    def _drop(self, count: int, reason: str) -> None:
        self._metrics.dropped.labels(reason).inc(count)
        self._drops_log.log(
            "%d events dropped (%s): memory holds %d (TRACKER_EDGE_QUEUE_MAX %d) and %s",
            count, reason, len(self._queue), self._settings.queue_max, self._spool_state(),
        )  # fmt: skip

    # -- state for /readyz and /metrics --------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def spool_bytes(self) -> int:
        return self._spool.pending_bytes

    def _spool_state(self) -> str:
        if self._refusal is None:
            return f"the spool holds {self._spool.pending_bytes} bytes"
        if self._refusal.reason == SPOOL_FULL:
            return f"the spool is full ({self._refusal.detail}, TRACKER_EDGE_SPOOL_MAX_MB)"
        return f"the spool's disk is full or failing ({self._refusal.detail})"

    def _refusal_note(self) -> str | None:
        """Why memory holds events that belong on disk, or None while it holds none."""
        if self._refusal is None or not self._queue:
            return None
        return f"{self._spool_state()}: {len(self._queue)} events held in memory"

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
            self._metrics.dropped.labels(MAKE_FAILED).inc()
            return None

    # -- memory to the spool -------------------------------------------------------------------

    async def _keep_spool(self) -> None:
        """The spool's task: every TRACKER_EDGE_SPOOL_SYNC_MS, or at once when a batch is late,
        move memory's events to the spool if they are due there, then fsync."""
        interval = self._settings.spool_sync_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spill_now.wait(), interval)
            self._spill_now.clear()
            try:
                if self._spill_due():
                    # The event loop serves requests between two steps.
                    while self._spill(SPILL_STEP):  # noqa: ASYNC110
                        await asyncio.sleep(0)
                self._spool.sync()
            except Exception:  # a bug: memory keeps the events, the next tick tries again
                self._metrics.publisher_restarts.inc()
                self._task_log.log("moving events to the spool failed; trying again", exc_info=True)

    def _spill_due(self) -> bool:
        now = time.monotonic()
        if not self._queue:
            self._memory_clear_at = now
        return spill_due(
            broker_ok=self._broker_ok,
            memory_age_s=now - self._memory_clear_at,
            deadline_s=self._deadline_s,
            since_refusal_s=now - self._refused_at,
            retry_s=REFUSAL_RETRY_S,
        )

    def _spill(self, limit: int) -> bool:
        """Move up to ``limit`` of memory's oldest events to the spool's tail: first a copy of
        the batch in flight from memory (it stays in flight), then the queue's head. Whether
        there may be more to move (nothing was refused)."""
        flight = self._flight
        if flight is not None and flight.from_memory and not flight.on_disk():
            if flight.made is None:
                return False  # the sender is still making them: copied at the next tick
            appended = self._to_spool(flight.uncopied()[:limit])
            flight.positions += appended.positions
            self._metrics.late_spooled.inc(len(appended.positions))
            return appended.refusal is None
        if not self._queue:
            return False
        taken = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
        messages = self._made(taken)
        appended = self._to_spool(messages)
        # What the spool refused goes back where it was, ahead of what came after it.
        self._queue.extendleft(reversed(messages[len(appended.positions) :]))
        if not self._queue:
            self._memory_clear_at = time.monotonic()
        self._metrics.queue_depth.set(len(self._queue))
        return appended.refusal is None and bool(self._queue)

    def _to_spool(self, messages: list[Message]) -> Appended:
        appended = self._spool.append([m.pack() for m in messages])
        if appended.positions:
            self._metrics.spooled.inc(len(appended.positions))
        self._metrics.spool_bytes.set(self._spool.pending_bytes)
        if appended.refusal is not None:
            self._refusal, self._refused_at = appended.refusal, time.monotonic()
            if appended.refusal.reason == SPOOL_FULL:  # a disk error is logged where it occurs
                self._refusals_log.log(
                    "%s: %d events stay in memory (TRACKER_EDGE_QUEUE_MAX %d)",
                    self._spool_state(), len(self._queue) + len(messages) - len(appended.positions),
                    self._settings.queue_max,
                )  # fmt: skip
        elif messages:
            self._refusal = None
        return appended

    def _spool_unsent(self) -> None:
        """Move the batch in flight (what of it has no copy there) and the queue, in this
        order, to the spool; what the spool refuses now is dropped, counted and logged."""
        unsent = self._made(self._queue)
        flight, self._flight = self._flight, None
        if flight is not None and flight.from_memory:
            rest = flight.uncopied() if flight.made is not None else self._made(flight.entries)
            unsent = rest + unsent
        self._queue.clear()
        self._metrics.queue_depth.set(0)
        if unsent:
            appended = self._to_spool(unsent)
            if appended.refusal is not None:
                self._drop(len(unsent) - len(appended.positions), appended.refusal.reason)

    def _return_flight(self) -> None:
        """Put what of the batch in flight has no copy in the spool back at memory's head."""
        flight, self._flight = self._flight, None
        if flight is None or not flight.from_memory:
            return  # a batch read from the spool is read again from there
        rest: Sequence[Entry] = flight.uncopied() if flight.made is not None else flight.entries
        self._queue.extendleft(reversed(rest))

    # -- reading the spool ---------------------------------------------------------------------

    def _decode(self, records: list[Record]) -> tuple[list[Message], list[Cursor]]:
        """The spooled records as messages, with where each lies; one that is not a message of
        ours is moved aside."""
        messages, positions = [], []
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
            positions.append(Cursor(record.segment, record.offset))
        return messages, positions

    def _count_damage(self, kind: str, size: int) -> None:
        self._metrics.spool_damaged.labels(kind).inc()
        self._metrics.spool_damaged_bytes.labels(kind).inc(size)

    def _disk_failed(self, operation: str, error: OSError) -> None:
        self._metrics.spool_errors.labels(operation).inc()
        self._disk_log.log(
            "spool %s failed in %s: %s; events stay in memory until the disk takes them",
            operation, self._spool.directory, error,
        )  # fmt: skip
