"""The publisher's background task: batches to Kafka, acknowledgements, failures to the spool.

One task sends the spool's oldest records, or (once the spool holds none) the queue, in
batches (at most one per linger interval unless a full batch waits), as one record batch per
partition, and waits for the acknowledgements. A batch not acknowledged within
TRACKER_EDGE_ACK_DEADLINE_MS is late: the broker counts as not answering (``/readyz`` 503, and
the spool task moves memory to the spool at every tick), and a batch from memory is copied to
the spool while it stays in flight, so that a hard kill loses none of it. Its outcome then
settles it (``ingest/flight.py``): a copy whose message was delivered after all is passed over
by the spool's reader, never sent twice; a failed message is sent again from the spool, or, if
it has no copy there, goes back to memory's head. The backlog's order is kept throughout
(``ingest/backlog.py``). The task is supervised: an unexpected error is logged at once,
counted, and the task restarted on a fresh producer after a pause that doubles while it keeps
failing. While closing it keeps sending until the queue and the spool are empty; the
publisher (``ingest/publisher.py``) bounds that drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from ingest.backlog import Backlog, Entry
from ingest.flight import Flight, outcome
from ingest.message import Message
from ingest.metrics import EdgeMetrics
from ingest.partitioner import partition_of
from ingest.settings import EdgeSettings
from ingest.throttled_log import ThrottledLog
from schemas.topics import ensure_topics

# The publisher's log lines keep the logger they always had: logs are searched by it.
logger = logging.getLogger("ingest.publisher")

# Record batches to send: (topic, partition) and the builder with the messages it holds.
RecordBatches = list[tuple[tuple[str, int], tuple[BatchBuilder, list[Message]]]]

BATCH_MAX = 5000
BACKOFF_MAX_S = 5.0
# How long a batch may wait for its acknowledgement before it fails and is sent again (Kafka's
# own default request timeout). Late batches are detected by the much shorter deadline; this
# is how long a late one keeps its chance to be acknowledged, so that a frozen broker that
# resumes takes it once instead of once per retry (each retry a copy in the topic).
REQUEST_TIMEOUT_MS = 30_000
SEND_TIMEOUT_S = REQUEST_TIMEOUT_MS / 1000 + 10
CONNECT_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0  # a producer stopped while a batch waits on a frozen broker
RESTART_BACKOFF_S = 0.5  # the first restart; doubles up to BACKOFF_MAX_S while it keeps failing
READ_RETRY_S = 1.0  # after the spool could not be read


class Sender(Backlog):
    def __init__(self, settings: EdgeSettings, metrics: EdgeMetrics, spool_dir: Path) -> None:
        super().__init__(settings, metrics, spool_dir)
        self._closing = False
        self._producer: AIOKafkaProducer | None = None
        self._restarting = False
        self._restart_backoff = RESTART_BACKOFF_S
        self._late_log = ThrottledLog(logger, logging.WARNING, "late batches", 10.0)

    async def _supervise(self) -> None:
        """Run the publishing loop; an unexpected error restarts it instead of ending it.

        A dead loop would leave every later event unsent while the pixel keeps answering;
        so the error is logged now (not when the task is awaited at shutdown), counted, and
        the loop restarted on a fresh producer.
        """
        while True:
            try:
                await self._run()
                return
            except Exception:
                self._restarting = True
                self._connected = self._broker_ok = False  # memory goes to the spool meanwhile
                self._metrics.publisher_restarts.inc()
                pause = self._restart_backoff
                logger.exception("the publisher failed; restarting it in %.1fs", pause)
                self._return_flight()
                self._spill_now.set()
                await self._drop_producer()
                await asyncio.sleep(min(pause, 0.1) if self._closing else pause)
                self._restart_backoff = min(pause * 2, BACKOFF_MAX_S)

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def _connect(self) -> AIOKafkaProducer | None:
        s = self._settings
        backoff = 0.2
        # Closing does not stop the attempts while anything waits to be published: close()
        # gives the drain TRACKER_EDGE_DRAIN_TIMEOUT_S and cancels this task at its end (an
        # edge stopped right after a failed first attempt left its spool unsent).
        while not (self._closing and not self._queue and self._spool.empty()):
            producer = AIOKafkaProducer(
                bootstrap_servers=list(s.kafka.bootstrap),
                acks="all",
                enable_idempotence=s.kafka.idempotence,
                compression_type=s.producer_compression,
                linger_ms=s.producer_linger_ms,
                max_batch_size=s.producer_batch_bytes,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
            )
            try:
                # Bounded, so that one hung attempt cannot hold the publisher forever.
                await asyncio.wait_for(self._start(producer), timeout=CONNECT_TIMEOUT_S)
            except BaseException as e:
                # Every way out closes the attempt's connections, cancellation included
                # (close() cancels this task at the drain deadline, maybe mid-start).
                await _stop_quietly(producer)
                if not isinstance(e, KafkaError | OSError | TimeoutError):
                    raise
                self._connected = self._broker_ok = False
                logger.warning("Kafka unreachable (%s); spooling, retry in %.1fs", e, backoff)
                if self._closing:  # draining: retry often, close() holds the deadline
                    await asyncio.sleep(0.2)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_closing(), timeout=backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            logger.info("connected to Kafka at %s", ",".join(s.kafka.bootstrap))
            return producer
        return None

    async def _start(self, producer: AIOKafkaProducer) -> None:
        s = self._settings
        await ensure_topics(
            s.kafka.bootstrap,
            s.kafka.topics,
            partitions=s.kafka.partitions,
            replication=s.kafka.replication,
        )
        await producer.start()

    async def _wait_closing(self) -> None:
        while not self._closing:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _run(self) -> None:
        self._producer = await self._connect()
        if self._producer is None:
            return
        self._restarting = False
        # Connected: the next batch's acknowledgement says whether the broker answers in time.
        self._connected = self._broker_ok = True
        backoff = 0.2
        loop = asyncio.get_running_loop()
        linger_s = self._settings.producer_linger_ms / 1000
        send_after = 0.0
        while True:
            if not self._spool.empty():  # older than anything in memory: first
                flight, progressed = self._read_spool()
                if flight is None:
                    if not progressed:  # unreadable (counted and logged): memory waits
                        await asyncio.sleep(READ_RETRY_S)
                    continue
            elif self._queue:
                # The linger: at most one batch per interval unless a full one is waiting. The
                # per-batch cost (a produce request, one record batch per partition, its CRC
                # and compression) then spreads over many events instead of a handful.
                wait = send_after - loop.time()
                if wait > 0 and len(self._queue) < BATCH_MAX and not self._closing:
                    await asyncio.sleep(wait)
                    continue  # the spool task may have moved memory to the spool meanwhile
                send_after = loop.time() + linger_s
                flight = Flight([self._queue.popleft() for _ in range(min(BATCH_MAX, self.depth))])
                if not self._queue:
                    self._memory_clear_at = time.monotonic()
                self._metrics.queue_depth.set(len(self._queue))
            else:
                self._memory_clear_at = time.monotonic()
                self._restart_backoff = RESTART_BACKOFF_S
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if await self._fly(flight):
                backoff = 0.2
            else:
                backoff = await self._back_off(backoff)

    def _read_spool(self) -> tuple[Flight | None, bool]:
        """The spool's oldest records as a batch to send, and whether the read got anywhere.

        No batch when those read need no sending (damage moved aside, copies delivered
        already: acknowledged at once), or when the spool could not be read.
        """
        start = self._spool.cursor
        records, cursor = self._spool.read_records(BATCH_MAX)
        messages, positions = self._decode(records)
        if messages:
            return Flight.from_spool(messages, positions, cursor), True
        if cursor != start or self._spool.empty():
            self._spool.acknowledge(cursor)
            self._metrics.spool_bytes.set(self._spool.pending_bytes)
            return None, True
        return None, False

    async def _fly(self, flight: Flight) -> bool:
        """Send a batch and settle its outcome; whether all of it was delivered.

        Not acknowledged within the deadline, it is late (:meth:`_late`) and waits on for its
        outcome: a frozen broker that resumes acknowledges it once, instead of once per retry.
        """
        self._flight = flight
        sending = asyncio.ensure_future(self._send(flight.entries))
        try:
            await asyncio.wait({sending}, timeout=self._deadline_s)
            if not sending.done():
                self._late(flight)
            failed = await sending  # an unexpected error: _supervise puts the batch back
        finally:
            if not sending.done():  # this task was cancelled (close's drain deadline)
                sending.cancel()
        self._settle(flight, failed)
        return not failed

    def _late(self, flight: Flight) -> None:
        flight.late = True
        self._broker_ok = False
        self._metrics.late_batches.inc()
        self._late_log.log(
            "no acknowledgement within %.1fs for a batch of %d events%s: the broker counts as "
            "not answering, new events go to the spool",
            self._deadline_s, len(flight.entries),
            "; copying it to the spool while it stays in flight" if flight.from_memory else "",
        )  # fmt: skip
        self._spill_now.set()

    def _settle(self, flight: Flight, failed: list[Message]) -> None:
        """Act on a batch's outcome: acknowledge in the spool what was delivered, put back at
        memory's head what failed and has no copy in the spool."""
        self._flight = None
        if flight.cursor is not None and not failed:
            self._spool.acknowledge(flight.cursor)
        else:
            done = outcome(flight, failed)
            if done.delivered_copies:
                self._spool.acknowledge_records(done.delivered_copies)
                if flight.from_memory:
                    self._metrics.late_copies_skipped.inc(len(done.delivered_copies))
            self._queue.extendleft(reversed(done.back_to_memory))
        self._metrics.spool_bytes.set(self._spool.pending_bytes)
        self._broker_ok = not failed and not flight.late
        if failed:
            self._spill_now.set()

    async def _back_off(self, backoff: float) -> float:
        self._metrics.publish_errors.inc()
        if not self._closing:
            await asyncio.sleep(backoff)
        else:
            await asyncio.sleep(min(backoff, 0.5))
        return min(backoff * 2, BACKOFF_MAX_S)

    async def _send(self, batch: Sequence[Entry]) -> list[Message]:
        """Make a batch's messages, send them and wait for every acknowledgement; return the
        messages that failed.

        The messages go as one record batch per partition, chosen by Kafka's default
        partitioner (murmur2 of the key, as every Kafka client does, in C): one future per
        partition instead of one per message cut the publisher's CPU per event by two
        thirds (17.5 -> 5.6 us, measured against the embedded broker). Making a message and
        appending it to its record batch go together, in MAKE_STEPS steps with the event loop
        serving requests between two (``ingest/backlog.py``): done in one go after the making,
        the appending alone held the loop for half a millisecond per batch.
        """
        assert self._producer is not None
        producer = self._producer
        started = time.perf_counter()
        made, record_batches = await self._record_batches(batch)
        if self._flight is not None and self._flight.entries is batch:
            self._flight.made = made  # from now on the spool task can copy it
        sends: list[tuple[list[Message], asyncio.Future[object]]] = []
        try:
            for (topic, partition), (builder, chunk) in record_batches:
                future = await producer.send_batch(builder, topic, partition=partition)
                sends.append((chunk, future))
        except KafkaError as e:
            logger.warning("publish failed before send: %s", e)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(f for _, f in sends), return_exceptions=True),
                timeout=SEND_TIMEOUT_S,
            )
        except TimeoutError:
            logger.warning("no acknowledgement in %.0fs for %d events", SEND_TIMEOUT_S, len(made))
            return made
        delivered: list[list[Message]] = []
        sent: dict[str, int] = {}
        for (chunk, _), result in zip(sends, results, strict=True):
            if not isinstance(result, BaseException):
                delivered.append(chunk)
                sent[chunk[0].topic] = sent.get(chunk[0].topic, 0) + len(chunk)
        for topic, count in sent.items():
            self._metrics.published.labels(topic).inc(count)
        failed = [] if sum(sent.values()) == len(made) else _undelivered(made, delivered)
        if failed:
            logger.warning("%d of %d events failed to publish", len(failed), len(made))
        self._metrics.publish_latency.observe(time.perf_counter() - started)
        return failed

    async def _record_batches(self, batch: Sequence[Entry]) -> tuple[list[Message], RecordBatches]:
        """The batch's messages, and the record batches holding them (a partition's in order).

        A failure before anything is sent (the partitions of a topic unknown) gives no record
        batch: every message failed.
        """
        assert self._producer is not None
        producer = self._producer
        made: list[Message] = []
        filling: dict[tuple[str, int], tuple[BatchBuilder, list[Message]]] = {}
        full: RecordBatches = []
        partitions: dict[str, list[int]] = {}
        end = 0
        try:
            async for end, messages in self._made_in_steps(batch):  # noqa: B007 (read below)
                made += messages
                for m in messages:
                    known = partitions.get(m.topic)
                    if known is None:
                        known = partitions[m.topic] = sorted(await producer.partitions_for(m.topic))
                    where = (m.topic, partition_of(m.key, known))
                    current = filling.get(where)
                    if current is None:
                        current = filling[where] = (producer.create_batch(), [])
                    # A full record batch refuses the message; a new one always takes it.
                    if current[0].append(key=m.key, value=m.value, timestamp=None) is None:
                        full.append((where, current))
                        current = filling[where] = (producer.create_batch(), [])
                        current[0].append(key=m.key, value=m.value, timestamp=None)
                    current[1].append(m)
        except KafkaError as e:
            logger.warning("publish failed before send: %s", e)
            return made + self._made(batch[end:]), []
        # A partition's full record batches go before its last one: the order received.
        return made, [*full, *filling.items()]


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    """Stop a producer that failed or is abandoned; its own failure to stop is logged only.

    Shielded: a cancellation arriving meanwhile still waits for the connections to close
    (an unclosed producer is found by the garbage collector much later, in someone else's
    code), then goes on.
    """
    stopping = asyncio.ensure_future(asyncio.wait_for(producer.stop(), timeout=STOP_TIMEOUT_S))
    try:
        await asyncio.shield(stopping)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await stopping
        raise
    except Exception:  # it failed already; the restart makes a new one
        logger.warning("stopping a failed producer failed too", exc_info=True)


def _undelivered(batch: list[Message], delivered: list[list[Message]]) -> list[Message]:
    """The messages of ``batch`` in no delivered chunk, in the order received (the spool
    replays them that way). Only for a batch that partly failed: a whole one needs no look."""
    done = {id(m) for chunk in delivered for m in chunk}
    return [m for m in batch if id(m) not in done]
