"""The projector's main loop: fetch a batch, plan, decode, dedupe, attribute, sink, checkpoint.

    check   before a partition is fetched (assigned, started, or its fetch moved under us):
            does its log still hold what ClickHouse says was written? If not, refuse it
    async for batch in fetch:          (both topics, bounded by size and by time)
        plan    skip what ClickHouse already holds, rewind where it holds less
        decode  either schema version; raw calls and clicks interpreted under the rules in
                force (projector/interpret.py); bad messages become dead letters, never a
                stuck partition
        dedupe  first call of a transaction counts, later ones are duplicates
        attribute  last qualifying click of the customer
        sink    one atomic insert per ledger table
        checkpoint  flush (retrying while retriable), then commit the offsets; this runs
                while the next batch is fetched and projected (one write in flight, in order)

ClickHouse is the source of truth for progress (see positions.py), so a process killed at
any instant, or a partition moved to another instance, never writes a batch twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from projector.attribution import Touch, attribute, customer_of, qualifying_carried
from projector.dedupe import COUNTED, CountedCache, DedupeKey, decide, dedupe_key
from projector.errors import ProjectorError
from projector.interpret import ContextOutcomes, read_click, read_sale
from projector.metrics import ProjectorMetrics
from projector.positions import (
    LogState,
    Plan,
    Regression,
    Resume,
    Stored,
    plan,
    record_fingerprint,
    verify,
)
from projector.probe import LogProbe
from projector.rows import Position, click_row, dead_letter_row, sales_call_row
from projector.settings import ProjectorSettings
from projector.sink import ClickHouseSink
from projector.store import Store
from schemas.events import Click, EventDecodeError, SaleCall
from schemas.topics import ensure_topics

logger = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Batch: TypeAlias = dict[TopicPartition, list[Record]]
_Failure = tuple[Record, Position, str]
_Decoded = tuple[
    list[tuple[Click, Position]],
    list[tuple[SaleCall, Position]],
    list[_Failure],
    list[tuple[ContextOutcomes, Position]],
]
T = TypeVar("T")

BACKOFF_MAX_S = 10.0
GENERATION_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class _Run:
    """What one run of the loop works with."""

    consumer: AIOKafkaConsumer
    store: Store
    dead_letters: AIOKafkaProducer
    stop: asyncio.Event
    probe: LogProbe


@dataclass(frozen=True, slots=True)
class _Refused:
    """A partition whose log went backwards: paused until the generation or its epoch moves."""

    generation: int
    epoch: int
    message: str


@dataclass(frozen=True, slots=True)
class _Written:
    """What a batch whose write is in flight will have put in ClickHouse.

    The next batch is projected while this one is written: its look-ups may not see these
    rows yet, so it takes them from here.
    """

    generation: int
    next_offsets: dict[TopicPartition, int]
    counted: dict[DedupeKey, str]
    clicks: list[Click]


def where(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def _fingerprint(value: int | None) -> str:
    return "unknown" if value is None else f"{value:016x}"


class _FinishBatchBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions move only between batches: the one in hand is written and committed first."""

    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._projector.lock:
            await self._projector.settle()
            self._projector.forget(revoked)
        if revoked:
            logger.info(
                "partitions revoked: %s", sorted(f"{t.topic}[{t.partition}]" for t in revoked)
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Nothing is fetched from them before their log is checked (the loop does it next).
        self._projector.hold(assigned)
        if assigned:
            logger.info(
                "partitions assigned: %s", sorted(f"{t.topic}[{t.partition}]" for t in assigned)
            )


class Projector:
    """Projects both topics into ClickHouse.

    Live mode (``generation=None``): a member of the consumer group, writing into the live
    generation (re-read at most every second, so a finished rebuild is picked up). Rebuild mode: no
    group, every partition from the earliest offset, into the given generation, no commits.
    """

    def __init__(
        self,
        settings: ProjectorSettings,
        metrics: ProjectorMetrics,
        *,
        generation: int | None = None,
        topics: tuple[str, ...] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()
        self.rewound: dict[TopicPartition, int] = {}
        self._fixed_generation = generation
        self._topics = topics or (settings.topics.clicks, settings.topics.sales)
        self._writing: asyncio.Task[None] | None = None
        self._written: _Written | None = None
        self._generation = 0
        self._generation_read_at = -GENERATION_TTL_S
        self._cache = CountedCache(settings.dedupe_cache_size)
        self._batches_written = 0
        self.progress: Callable[[AIOKafkaConsumer], Awaitable[None]] | None = None
        # Per partition: the log epoch its log was checked in, where its next fetch must start
        # (where we put the consumer), whether it waits for a check, whether it was refused.
        self._epochs: dict[TopicPartition, int] = {}
        self._origins: dict[TopicPartition, int] = {}
        self._unverified: set[TopicPartition] = set()
        self.refused: dict[TopicPartition, _Refused] = {}
        self._said_unverified: set[TopicPartition] = set()
        self._resumed_at_ms: dict[TopicPartition, int] = {}
        self._watched_at = -GENERATION_TTL_S

    @property
    def health(self) -> str | None:
        """Why the projector is not ready, or None when it is (what /readyz answers)."""
        if self._consumer is None or not self._consumer.assignment():
            return "not consuming yet"  # a group join can take seconds
        if self._unverified:  # assigned, not fetched from until their log is checked
            return f"checking the log of {len(self._unverified)} partitions before reading them"
        if self.refused:
            return "log went backwards, partitions refused until an operator acts: " + "; ".join(
                r.message for _, r in sorted(self.refused.items())
            )
        return None

    @property
    def ready(self) -> bool:
        return self.health is None

    def hold(self, partitions: set[TopicPartition]) -> None:
        """Fetch nothing from ``partitions`` until their log is checked."""
        if self._consumer is not None and partitions:
            self._consumer.pause(*partitions)
        self._unverified |= partitions

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions that left this instance (their new owner checks them again)."""
        for tp in partitions:
            self.rewound.pop(tp, None)
            self._epochs.pop(tp, None)
            self._origins.pop(tp, None)
            self._resumed_at_ms.pop(tp, None)
            self._unverified.discard(tp)
            self.refused.pop(tp, None)

    async def _retrying(
        self, what: str, action: Callable[[], Awaitable[T]], stop: asyncio.Event
    ) -> T:
        """Run ``action`` until it succeeds; the one place that branches on ``retriable``."""
        backoff = 0.2
        while True:
            try:
                return await action()
            except ProjectorError as e:
                if not e.retriable or stop.is_set():
                    raise
                self.metrics.retries.labels(what).inc()
                logger.warning("%s failed (%s); retrying in %.1fs", what, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Project until ``stop`` is set; with ``burst``, return once caught up."""
        s = self.settings
        store = await self._retrying(
            "connect to ClickHouse",
            lambda: Store.connect(
                s.clickhouse_url, s.clickhouse_database, cluster=s.clickhouse_cluster
            ),
            stop,
        )
        try:
            live = await self._retrying("prepare the schema", store.prepare, stop)
            self._generation = self._fixed_generation or live
            await ensure_topics(
                s.kafka_bootstrap, s.topics, partitions=s.kafka_partitions,
                replication=s.kafka_replication,
            )  # fmt: skip
            probe = LogProbe(s.kafka_bootstrap)
            await self._retrying("start the log probe", probe.start, stop)
            consumer = await self._start_consumer()
            dead_letters = AIOKafkaProducer(
                bootstrap_servers=list(s.kafka_bootstrap), acks="all",
                enable_idempotence=s.kafka_idempotence,
            )  # fmt: skip
            await dead_letters.start()
            try:
                try:
                    run = _Run(consumer, store, dead_letters, stop, probe)
                    await self._loop(run, burst=burst)
                finally:
                    await self.settle()
            finally:
                self._consumer = None
                await consumer.stop()
                await dead_letters.stop()
                await probe.stop()
        finally:
            await store.close()

    async def _start_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        topics = self._topics
        consumer = AIOKafkaConsumer(
            bootstrap_servers=list(s.kafka_bootstrap),
            group_id=None if self._fixed_generation else s.group_id,
            enable_auto_commit=False,
            # Positions come from ClickHouse (every partition is sought after its log check).
            # An out-of-range fetch resets to the earliest offset: the loop sees the fetch start
            # where it did not put the consumer and checks the log before writing anything.
            auto_offset_reset="earliest",
            max_poll_records=s.batch_max,
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_session_timeout_ms // 3,
            # What it was before the session timeout became a setting (aiokafka's default).
            rebalance_timeout_ms=max(s.kafka_session_timeout_ms, 10_000),
        )
        await consumer.start()
        if self._fixed_generation:
            partitions = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(await self._partitions(consumer, topic))
            ]
            consumer.assign(partitions)
            self._consumer = consumer
            # The log check seeks where the generation's tables end: the rebuild's second
            # pass does not fetch again the clicks its first pass wrote.
            self.hold(set(partitions))
        else:
            consumer.subscribe(topics, listener=_FinishBatchBeforeRevoke(self))
        return consumer

    @staticmethod
    async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
        for _ in range(50):
            await consumer.topics()  # refreshes the metadata
            found = consumer.partitions_for_topic(topic)
            if found:
                return set(found)
            await asyncio.sleep(0.1)
        raise ProjectorError(f"topic {topic} has no partitions", retriable=False)

    async def _loop(self, r: _Run, *, burst: bool) -> None:
        s = self.settings
        self._consumer = r.consumer
        logger.info(
            "projecting %s into %s generation %d",
            " and ".join(self._topics), s.clickhouse_database, self._generation,
        )  # fmt: skip
        while not r.stop.is_set():
            await self._check_logs(r)
            batch = await r.consumer.getmany(
                timeout_ms=s.flush_interval_ms, max_records=s.batch_max
            )
            self._watch_highwaters(r.consumer)
            batch = {tp: records for tp, records in batch.items() if records}
            if not batch:
                if self._writing is not None and self._writing.done():
                    await self.settle()  # idle: raise now if the last write failed
                if burst and await self._caught_up(r.consumer):
                    return
                continue
            async with self.lock:
                started = time.perf_counter()
                sink, kept, written = await self._project(batch, r)
                # One write in flight at a time, in order: this batch's rows go once the
                # previous batch's are in ClickHouse (and its offsets committed).
                await self.settle()
                self._written = written
                self._writing = asyncio.create_task(
                    self._checkpoint(sink, kept, written, r, started)
                )
            await self._record_lag(r.consumer)
            if self.progress is not None:
                await self.progress(r.consumer)
            if burst and await self._caught_up(r.consumer):
                return

    async def settle(self) -> None:
        """Wait for the write in flight (if any) to land; raise what it raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    # -- is the log still the one we wrote from? ------------------------------------------------

    async def _check_logs(self, r: _Run) -> None:
        """Resume the partitions waiting for a check of their log, or refuse them.

        Refused partitions are looked at again (at most every GENERATION_TTL_S) in case an
        operator acted: a new live generation (``rebuild``) or a new log epoch (``accept-log``).
        """
        now = time.monotonic()
        watch = bool(self.refused) and now - self._watched_at >= GENERATION_TTL_S
        if not self._unverified and not watch:
            return
        async with self.lock:
            # Positions must include the write in flight.
            await self.settle()
            generation = await self._current_generation(r.store, r.stop)
            if watch:
                self._watched_at = now
                await self._watch(generation, r)
            assigned = r.consumer.assignment()
            self._unverified &= assigned
            tps = sorted(self._unverified)
            if not tps:
                return
            stored = await self._retrying(
                "read positions", lambda: r.store.positions(generation, tps), r.stop
            )
            logs = await self._retrying(
                "read the log", lambda: r.probe.states({tp: stored.get(tp) for tp in tps}), r.stop
            )
            for tp in tps:
                self._unverified.discard(tp)
                verdict = verify(stored.get(tp), logs[tp])
                if isinstance(verdict, Regression):
                    self._refuse(
                        tp, generation=generation, stored=stored.get(tp), log=logs[tp],
                        verdict=verdict, consumer=r.consumer,
                    )  # fmt: skip
                else:
                    self._resume(tp, stored.get(tp), verdict, r.consumer)
                    self.metrics.set_lag(tp, logs[tp].high_watermark - verdict.offset)

    async def _watch(self, generation: int, r: _Run) -> None:
        """Check refused partitions again once the generation or their epoch moved."""
        tps = sorted(self.refused)
        stored = await self._retrying(
            "read positions", lambda: r.store.positions(generation, tps), r.stop
        )
        for tp in tps:
            refused = self.refused[tp]
            epoch = stored[tp].epoch if tp in stored else 0
            if (refused.generation, refused.epoch) != (generation, epoch):
                logger.warning(
                    "%s[%d]: now generation %d, log epoch %d (refused in generation %d, epoch "
                    "%d): checking its log again",
                    tp.topic, tp.partition, generation, epoch, refused.generation, refused.epoch,
                )  # fmt: skip
                del self.refused[tp]
                self._unverified.add(tp)

    def _watch_highwaters(self, consumer: AIOKafkaConsumer) -> None:
        """Hold partitions whose log now ends before where we fetch: it went backwards.

        Kafka answers such a fetch "offset out of range" (the client resets to the earliest
        offset, and the plan sees the fetch start elsewhere); some brokers (Tansu) answer it
        with no records and the lower high watermark, and would serve the new log's records
        from our position on once it grows past it, the ones below silently skipped.
        """
        for tp in consumer.assignment():
            origin = self._origins.get(tp)
            if origin is None or tp in self._unverified or tp in self.refused:
                continue
            highwater = consumer.highwater(tp)
            answered_at = consumer.last_poll_timestamp(tp)
            # Only an answer to a fetch made after the partition resumed is about this log.
            if highwater is None or answered_at is None:
                continue
            if answered_at > self._resumed_at_ms.get(tp, 0) and highwater < origin:
                logger.warning(
                    "%s[%d]@%d: the log ends at %d (high watermark), below where we fetch: "
                    "checking the log before writing anything of it",
                    tp.topic, tp.partition, origin, highwater,
                )  # fmt: skip
                self.hold({tp})

    def _resume(
        self, tp: TopicPartition, stored: Stored | None, verdict: Resume, consumer: AIOKafkaConsumer
    ) -> None:
        epoch = stored.epoch if stored is not None else 0
        self._epochs[tp] = epoch
        self._origins[tp] = verdict.offset
        if verdict.gap is not None:
            # The plan accepts this gap once, and says so.
            self.rewound[tp] = verdict.gap[0]
        if verdict.unverified and tp not in self._said_unverified:
            self._said_unverified.add(tp)
            logger.warning(
                "%s[%d]@%d: no fingerprint to compare for the last record written (written "
                "before fingerprints existed, or gone by retention): checked the high "
                "watermark only",
                tp.topic, tp.partition, verdict.offset,
            )  # fmt: skip
        logger.info(
            "%s[%d]@%d: log checked (epoch %d): resuming here",
            tp.topic, tp.partition, verdict.offset, epoch,
        )  # fmt: skip
        consumer.seek(tp, verdict.offset)
        consumer.resume(tp)
        self._resumed_at_ms[tp] = int(time.time() * 1000)

    def _refuse(
        self,
        tp: TopicPartition,
        *,
        generation: int,
        stored: Stored | None,
        log: LogState,
        verdict: Regression,
        consumer: AIOKafkaConsumer,
    ) -> None:
        """Stop consuming ``tp`` (others go on), loudly, until an operator acts."""
        assert stored is not None  # nothing stored never regresses
        position, epoch = stored.next_offset, stored.epoch
        message = (
            f"{tp.topic}[{tp.partition}]@{position}: {verdict.reason}; expected (position "
            f"{position}, fingerprint {_fingerprint(stored.fingerprint)}), found (high "
            f"watermark {log.high_watermark}, fingerprint at {position - 1} "
            f"{_fingerprint(log.found)})"
        )
        if self._fixed_generation:
            raise ProjectorError(
                f"the log went backwards during the rebuild: {message}; run it again",
                retriable=False,
            )
        consumer.pause(tp)
        self.refused[tp] = _Refused(generation, epoch, message)
        self.metrics.log_regressions.labels(tp.topic, str(tp.partition)).inc()
        logger.error(
            "%s[%d]@%d: the log went backwards, partition refused (generation %d, log epoch "
            "%d): %s; expected (position %d, fingerprint %s), found (high watermark %d, "
            "fingerprint at %d %s). Nothing of it is skipped or written until an operator "
            "runs `python -m projector accept-log --topic %s --partition %d` (project the log "
            "as it is now) or `python -m projector rebuild`",
            tp.topic, tp.partition, position, generation, epoch, verdict.reason, position,
            _fingerprint(stored.fingerprint), log.high_watermark, position - 1,
            _fingerprint(log.found), tp.topic, tp.partition,
        )  # fmt: skip

    # -- one batch ----------------------------------------------------------------------------

    async def _project(self, batch: Batch, r: _Run) -> tuple[ClickHouseSink, Batch, _Written]:
        """The batch's rows, the records that count as handled, and what writing them adds."""
        store, stop = r.store, r.stop
        generation = await self._current_generation(store, stop)
        sink = ClickHouseSink(store, self.metrics)
        sink.clear(generation)
        spans = {tp: (records[0].offset, records[-1].offset) for tp, records in batch.items()}
        clicks, calls, failures, contexts = self._decode(batch)
        # The three look-ups do not depend on each other: one concurrent round trip. The
        # last two may cover records the plan then skips; extra answers are facts all the same.
        positions, counted, stored = await asyncio.gather(
            self._retrying("read positions", lambda: store.positions(generation, spans), stop),
            self._counted(generation, calls, r),
            self._stored_touches(generation, calls, r),
        )
        next_offsets = {tp: s.next_offset for tp, s in positions.items()}
        # A partition whose epoch moved (an operator accepted a new log, a rebuild swapped in
        # other tables) or that waits for a check is not written until its log is checked.
        held = {
            tp
            for tp in spans
            if tp in self._unverified
            or tp in self.refused
            or (positions[tp].epoch if tp in positions else 0) != self._epochs.get(tp, 0)
        }
        # The previous batch may still be in flight: what it writes counts as written.
        earlier: list[Click] = []
        before = self._written
        if before is not None and before.generation == generation:
            for tp, offset in before.next_offsets.items():
                if tp in spans:
                    next_offsets[tp] = max(next_offsets.get(tp, 0), offset)
            counted = {**before.counted, **counted}
            earlier = before.clicks
        p = plan(spans, next_offsets, self.rewound, self._origins, held)
        self._follow(p, spans, held, r.consumer)
        if p.rewind_to or p.verify or any(p.keep_from[tp] != spans[tp][0] for tp in p.keep_from):
            keep = {(tp.topic, tp.partition): first for tp, first in p.keep_from.items()}

            def keeps(at: Position) -> bool:
                return at[:2] in keep and at[2] >= keep[at[:2]]

            clicks = [(c, at) for c, at in clicks if keeps(at)]
            calls = [(c, at) for c, at in calls if keeps(at)]
            failures = [f for f in failures if keeps(f[1])]
            contexts = [(o, at) for o, at in contexts if keeps(at)]
        self._count_contexts(contexts)
        for record, position, reason in failures:
            await self._dead_letter(r.dead_letters, record, reason)
            sink.dead_letters.add(dead_letter_row(position, reason, record.value), position)
        for tp, first in p.keep_from.items():
            new = sum(1 for record in batch[tp] if record.offset >= first)
            self.metrics.events.labels(tp.topic).inc(new)
            self.metrics.already_written.inc(len(batch[tp]) - new)
        self.metrics.batch_size.observe(len(clicks) + len(calls) + len(failures))

        for click, position in clicks:
            sink.clicks.add(click_row(click, position), position)
        decisions = decide([c for c, _ in calls], counted)
        touches = self._touches(stored, calls, [*earlier, *(c for c, _ in clicks)])
        window = self.settings.attribution_window_ms
        pending: list[tuple[DedupeKey, str]] = []
        for (call, position), decision in zip(calls, decisions, strict=True):
            attribution = None
            if decision is COUNTED:
                attribution = attribute(
                    call, touches.get((call.universe, customer_of(call)), ()), window
                )
                pending.append((dedupe_key(call), call.event_id))
            elif decision.status == "duplicate":
                self.metrics.duplicates.labels(decision.reason).inc()
            else:
                self.metrics.rejects.labels(decision.reason).inc()
            sink.calls.add(sales_call_row(call, decision, attribution, position), position)
        kept = {tp: records for tp, records in batch.items() if tp in p.keep_from}
        for tp, records in kept.items():
            self._origins[tp] = records[-1].offset + 1
        written = _Written(
            generation=generation,
            next_offsets={tp: records[-1].offset + 1 for tp, records in kept.items()},
            counted=dict(pending),
            clicks=[c for c, _ in clicks],
        )
        return sink, kept, written

    def _follow(
        self,
        p: Plan,
        spans: dict[TopicPartition, tuple[int, int]],
        held: set[TopicPartition],
        consumer: AIOKafkaConsumer,
    ) -> None:
        """Seek where the plan rewinds; hold what it checks again; say where it accepts a gap."""
        for tp, offset in p.rewind_to.items():
            logger.warning(
                "%s[%d]@%d: ClickHouse holds up to %d, fetch started here: rewinding",
                tp.topic, tp.partition, spans[tp][0], offset,
            )  # fmt: skip
            self.rewound[tp] = offset
            self._origins[tp] = offset
            consumer.seek(tp, offset)
        for tp in sorted(p.verify):
            if tp in held:
                logger.info(
                    "%s[%d]@%d: its log epoch or generation moved: checking its log again",
                    tp.topic, tp.partition, spans[tp][0],
                )  # fmt: skip
            else:
                logger.warning(
                    "%s[%d]@%d: fetch started here, not at %s where the consumer was put (an "
                    "out-of-range reset: did the log change?); checking the log before "
                    "writing anything of it",
                    tp.topic, tp.partition, spans[tp][0], self._origins.get(tp),
                )  # fmt: skip
            self.hold({tp})
        for tp, (expected, first) in p.gaps_accepted.items():
            logger.error(
                "%s[%d]: offsets %d..%d are gone from the log (retention?); moving on",
                tp.topic, tp.partition, expected, first - 1,
            )  # fmt: skip

    def _count_contexts(self, contexts: list[tuple[ContextOutcomes, Position]]) -> None:
        """Once per call, as the edge counted them: what the plan skips was counted when it
        was first written (by this process or another)."""
        for outcomes, _ in contexts:
            for source, outcome in outcomes:
                self.metrics.click_context.labels(source, outcome).inc()

    def _decode(self, batch: Batch) -> _Decoded:
        """Decoded clicks and calls (raw ones interpreted under the settings' rules), and the
        click-context outcomes of raw calls; what does not decode becomes a dead letter, with
        why."""
        s = self.settings
        sales_topic = s.topics.sales
        clicks: list[tuple[Click, Position]] = []
        calls: list[tuple[SaleCall, Position]] = []
        failures: list[_Failure] = []
        contexts: list[tuple[ContextOutcomes, Position]] = []
        for tp, records in batch.items():
            sales = tp.topic == sales_topic
            epoch = self._epochs.get(tp, 0)
            for record in records:
                position = (
                    record.topic, record.partition, record.offset, epoch,
                    record_fingerprint(record.key, record.value),
                )  # fmt: skip
                try:
                    if sales:
                        call, outcomes = read_sale(
                            record.value, secret=s.secret,
                            window_ms=s.attribution_window_ms, rules=s.rules,
                        )  # fmt: skip
                        calls.append((call, position))
                        if outcomes:
                            contexts.append((outcomes, position))
                    else:
                        click = read_click(record.value, secret=s.secret, rules=s.rules)
                        clicks.append((click, position))
                except EventDecodeError as e:
                    failures.append((record, position, str(e)))
                except Exception as e:
                    # A bug in interpreting one message must not stop its partition: it is
                    # kept as a dead letter, and a rebuild after the fix reads it again.
                    logger.exception("interpreting %s failed", where(record))
                    failures.append((record, position, f"could not be interpreted: {e!r}"))
        return clicks, calls, failures, contexts

    async def _current_generation(self, store: Store, stop: asyncio.Event) -> int:
        """The generation to write; in live mode re-read at most every GENERATION_TTL_S.

        A rebuild's switch is seen within that time: until then batches still go to the
        previous tables (kept for ``rebuild --drop-previous``'s grace), and the switch
        rewinds to where the new tables end, so nothing is lost either way.
        """
        if self._fixed_generation:
            return self._fixed_generation
        now = time.monotonic()
        if now - self._generation_read_at < GENERATION_TTL_S:
            return self._generation
        live = await self._retrying("read the live generation", store.live_generation, stop)
        self._generation_read_at = now
        if live != self._generation:
            logger.warning("live generation is now %d (was %d)", live, self._generation)
            self._generation = live
            self.rewound.clear()
        return live

    async def _counted(
        self, generation: int, calls: list[tuple[SaleCall, Position]], r: _Run
    ) -> dict[DedupeKey, str]:
        """What is already counted among the calls' keys: from the cache, else ClickHouse."""
        known: dict[DedupeKey, str] = {}
        unknown: set[DedupeKey] = set()
        for call, _ in calls:
            if call.status != "accepted":
                continue
            key = dedupe_key(call)
            event_id = self._cache.get(key)
            if event_id is None:
                unknown.add(key)
            else:
                known[key] = event_id
        if unknown:
            found = await self._retrying(
                "look up counted transactions",
                lambda: r.store.counted(generation, unknown),
                r.stop,
            )
            self._cache.put_all(found.items())
            known.update(found)
        return known

    async def _stored_touches(
        self, generation: int, calls: list[tuple[SaleCall, Position]], r: _Run
    ) -> list[Touch]:
        """Stored clicks of the customers whose accepted sales carry no qualifying click."""
        window = self.settings.attribution_window_ms
        needing = [
            call
            for call, _ in calls
            if call.status == "accepted"
            and customer_of(call)
            and qualifying_carried(call, window) is None
        ]
        if not needing:
            return []
        customers = {(c.universe, customer_of(c)) for c in needing}
        since = min(c.received_at_ms for c in needing) - window
        until = max(c.received_at_ms for c in needing)
        return await self._retrying(
            "look up clicks",
            lambda: r.store.clicks_of(generation, customers, since, until),
            r.stop,
        )

    @staticmethod
    def _touches(
        stored: list[Touch], calls: list[tuple[SaleCall, Position]], clicks: list[Click]
    ) -> dict[tuple[str, str], list[Touch]]:
        """Stored clicks and clicks not stored yet (this batch's, the one in flight's)."""
        touches: dict[tuple[str, str], list[Touch]] = {}
        for touch in stored:
            touches.setdefault((touch.universe, touch.customer_id), []).append(touch)
        if not clicks:
            return touches
        buyers = {(call.universe, customer_of(call)) for call, _ in calls}
        for c in clicks:
            key = (c.universe, c.customer_id)
            if key in buyers:
                touch = Touch(c.universe, c.customer_id, c.campaign_id, c.link_id, c.product,
                              c.clicked_at_ms, c.event_id)  # fmt: skip
                touches.setdefault(key, []).append(touch)
        return touches

    async def _dead_letter(self, producer: AIOKafkaProducer, record: Record, reason: str) -> None:
        logger.error("dead letter %s: %s", where(record), reason)
        headers = [("reason", reason.encode()), ("source", where(record).encode())]
        try:
            await producer.send_and_wait(
                self.settings.topics.dead_letters, record.value, key=record.key, headers=headers
            )
        except KafkaError as e:
            # The dead_letters table still records it; the topic copy is a convenience.
            logger.error("could not publish dead letter %s: %s", where(record), e)
        self.metrics.dead_letters.inc()

    async def _checkpoint(
        self, sink: ClickHouseSink, kept: Batch, written: _Written, r: _Run, started: float
    ) -> None:
        """Write the batch, then commit its offsets; runs while the next batch is projected."""
        self._batches_written += 1
        self._fault("before-write")
        await self._retrying("write to ClickHouse", sink.flush, r.stop)
        self._cache.put_all(written.counted.items())
        self.metrics.batch_latency.observe(time.perf_counter() - started)
        self._fault("after-write")
        if self._fixed_generation or not kept:
            return
        offsets = {tp: records[-1].offset + 1 for tp, records in kept.items()}
        try:
            await r.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            # Harmless: ClickHouse holds the positions, the next owner skips what is written.
            logger.warning("offset commit failed (%s); ClickHouse positions will be used", e)
        self._fault("after-commit")

    def _fault(self, stage: str) -> None:
        s = self.settings
        if s.fault == stage and self._batches_written >= s.fault_after_batches:
            logger.error("fault injection: SIGKILL at %s of batch %d", stage, self._batches_written)
            os.kill(os.getpid(), signal.SIGKILL)

    # -- progress -----------------------------------------------------------------------------

    async def _caught_up(self, consumer: AIOKafkaConsumer) -> bool:
        """Every assigned partition read up to its high watermark (as of the last fetch).

        A partition not fetched yet has no known watermark: not caught up.
        """
        assignment = consumer.assignment()
        if not assignment:
            return False
        for tp in assignment:
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                return False
        return True

    async def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - await consumer.position(tp))
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
