"""The projector's main loop: fetch a batch, check the log, project it, checkpoint it.

    check   before a partition is fetched (assigned, started, or its fetch moved under us):
            does its log still hold what ClickHouse says was written? (logcheck.py)
    async for batch in fetch:          (both topics, bounded by size and by time)
        decode     records -> clicks, calls, dead letters (decode.py)
        look up    positions, counted transactions, stored clicks (lookups.py)
        project    plan, dedupe, attribute, rows: pure (project.py)
        checkpoint write, then cache, then commit (checkpoint.py); this runs while the next
                   batch is fetched and projected (one write in flight, in order)

Live and rebuild are two set-ups of this loop (modes.py). ClickHouse is the source of truth
for progress (see positions.py), so a process killed at any instant, or a partition moved
to another instance, never writes a batch twice; and ClickHouse decides at insert time which
instance may write a partition (fencing.py), so one paused at any instant does not either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from projector.batching import next_batch_size
from projector.checkpoint import Checkpoint
from projector.decode import Batch, Failure, decode, where
from projector.dedupe import CountedCache
from projector.errors import ProjectorError
from projector.fencing import Fencing
from projector.logcheck import LogCheck, Refused
from projector.lookups import Lookups
from projector.metrics import ProjectorMetrics
from projector.modes import Live, Mode, Progress, Rebuild
from projector.probe import LogProbe
from projector.project import Projected, Written, project
from projector.retry import Retrying
from projector.settings import ProjectorSettings
from projector.store import Store
from schemas.topics import ensure_topics
from schemas.universe_log import RegistryReader, RegistryUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Run:
    """What one run of the loop works with."""

    consumer: AIOKafkaConsumer
    store: Store
    dead_letters: AIOKafkaProducer
    stop: asyncio.Event
    probe: LogProbe
    retrying: Retrying
    lookups: Lookups
    checkpoint: Checkpoint
    fencing: Fencing


class Projector:
    """Projects both topics into ClickHouse.

    Live (``generation=None``): a member of the consumer group, writing into the live
    generation. Rebuild (``generation=N``): no group, every partition from where generation
    N ends, no commits; ``progress`` is awaited after each batch.
    """

    def __init__(
        self,
        settings: ProjectorSettings,
        metrics: ProjectorMetrics,
        *,
        generation: int | None = None,
        topics: tuple[str, ...] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._mode: Mode = Live() if generation is None else Rebuild(generation, progress)
        self._topics = topics or (settings.kafka.topics.clicks, settings.kafka.topics.sales)
        self._consumer: AIOKafkaConsumer | None = None
        # Held while a batch is projected and handed to the checkpoint, while logs are
        # checked, and while partitions are released: they move only between batches.
        self._lock = asyncio.Lock()
        # A partition found fenced by another instance waits two session timeouts before this
        # one registers it again: time enough for a zombie to hear from the group that it is
        # one (it heartbeats every third of a session timeout).
        self._log = LogCheck(
            metrics, self._mode.on_regression,
            fence_grace_s=2 * settings.consumer_session_timeout_ms / 1000,
        )  # fmt: skip
        self._retrying: Retrying | None = None
        self._cache = CountedCache(settings.dedupe_cache_size)
        self._generation = 0
        self._writing: asyncio.Task[None] | None = None
        self._written: Written | None = None
        # Grows while behind, shrinks once caught up (projector/batching.py).
        self._batch_target = settings.batch_max
        self.universes = RegistryReader(
            settings.kafka.bootstrap, settings.kafka.topics.universes,
            required=settings.universes_required,
        )  # fmt: skip
        metrics.universes.set_function(lambda: len(self.universes.registry.universes))

    @property
    def health(self) -> str | None:
        """Why the projector is not ready, or None when it is (what /readyz answers)."""
        if not self.universes.caught_up:
            return "universe registry not read yet"
        if self._retrying is not None and (failing := self._retrying.health) is not None:
            return failing  # ClickHouse not answering, or the broker not answering the probe
        if self._consumer is None or not self._consumer.assignment():
            return "not consuming yet"  # a group join can take seconds
        return self._log.health

    @property
    def ready(self) -> bool:
        return self.health is None

    @property
    def refused(self) -> Mapping[TopicPartition, Refused]:
        """Partitions whose log went backwards, waiting for an operator."""
        return self._log.refused

    def hold(self, partitions: set[TopicPartition]) -> None:
        """Fetch nothing from ``partitions`` until their log is checked."""
        self._log.hold(partitions, self._consumer)

    async def release(self, partitions: set[TopicPartition]) -> None:
        """Let ``partitions`` go to another instance once the batch in hand is written."""
        async with self._lock:
            await self.settle()
            # Landed (or dropped by a newer fence): its facts are not carried to the next batch.
            self._written = None
            self._log.forget(partitions)

    async def settle(self) -> None:
        """Wait for the write in flight (if any) to land; raise what it raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Project until ``stop`` is set; with ``burst``, return once caught up."""
        s = self.settings
        retrying = self._retrying = Retrying(self.metrics, stop)
        # Every client is closed on every way out (errors and cancellation included), in the
        # reverse order of its creation: a client left open is found by the garbage collector
        # much later, in someone else's code.
        async with contextlib.AsyncExitStack() as opened:
            store = await retrying("connect to ClickHouse", lambda: Store.open(s))
            opened.push_async_callback(store.close)
            live = await retrying("prepare the schema", store.prepare)
            self._generation = self._mode.first_generation(live)
            await ensure_topics(
                s.kafka.bootstrap, s.kafka.topics, partitions=s.kafka.partitions,
                replication=s.kafka.replication,
            )  # fmt: skip
            opened.push_async_callback(self.universes.stop)
            await self._read_universes()
            probe = LogProbe(s.kafka.bootstrap)
            opened.push_async_callback(probe.stop)
            await retrying("start the log probe", probe.start)
            dead_letters = AIOKafkaProducer(
                bootstrap_servers=list(s.kafka.bootstrap), acks="all",
                enable_idempotence=s.kafka.idempotence,
            )  # fmt: skip
            opened.push_async_callback(dead_letters.stop)
            await dead_letters.start()
            consumer = self._consumer_for(s)
            opened.push_async_callback(self._stop_consumer, consumer)
            await self._start_consumer(consumer)
            # Last in, first out: the write in flight lands before the consumer stops.
            opened.push_async_callback(self.settle)
            lookups = Lookups(store, retrying, self._cache, self._window_ms)
            checkpoint = Checkpoint(
                s, self.metrics, store, lookups, retrying, commit=self._mode.committer(consumer)
            )
            fencing = Fencing(store, retrying, self.metrics, self._cache)
            run = _Run(
                consumer, store, dead_letters, stop, probe, retrying, lookups, checkpoint, fencing
            )
            await self._loop(run, burst=burst)

    async def _read_universes(self) -> None:
        """Read the universe registry to its end: no call is judged before it is known."""
        s = self.settings
        try:
            await self.universes.start()
            await self.universes.wait_read(s.registry_timeout_s)
        except RegistryUnavailable as e:
            raise ProjectorError(str(e), retriable=False) from e
        registry = self.universes.registry
        if not registry.enforced:
            logger.warning(
                "the universe registry %s is empty: every universe counts until one is "
                "registered (set TRACKER_UNIVERSES_REQUIRED=1 to count none)",
                s.kafka.topics.universes,
            )
        else:
            logger.info(
                "universe registry: %d universes registered, only they count",
                len(registry.universes),
            )

    def _window_ms(self, universe: str) -> int:
        return self.universes.registry.window_ms(universe, self.settings.attribution_window_ms)

    def _consumer_for(self, s: ProjectorSettings) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=list(s.kafka.bootstrap),
            group_id=self._mode.group_id(s),
            enable_auto_commit=False,
            # Positions come from ClickHouse (every partition is sought after its log check).
            # An out-of-range fetch resets to the earliest offset: the loop sees the fetch start
            # where it did not put the consumer and checks the log before writing anything.
            auto_offset_reset="earliest",
            max_poll_records=s.batch_max,
            session_timeout_ms=s.consumer_session_timeout_ms,
            heartbeat_interval_ms=s.consumer_session_timeout_ms // 3,
            # What it was before the session timeout became a setting (aiokafka's default).
            rebalance_timeout_ms=max(s.consumer_session_timeout_ms, 10_000),
        )

    async def _start_consumer(self, consumer: AIOKafkaConsumer) -> None:
        await consumer.start()
        self._consumer = consumer
        await self._mode.attach(consumer, self._topics, self)

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = None
        await consumer.stop()

    async def _loop(self, r: _Run, *, burst: bool) -> None:
        s = self.settings
        logger.info(
            "projecting %s into %s generation %d",
            " and ".join(self._topics), s.clickhouse_database, self._generation,
        )  # fmt: skip
        while not r.stop.is_set():
            if self._log.due():
                await self._check_logs(r)
            batch = await self._fetch(r.consumer)
            self._log.watch_highwaters(r.consumer)
            batch = {tp: records for tp, records in batch.items() if records}
            if not batch:
                if self._writing is not None and self._writing.done():
                    await self.settle()  # idle: raise now if the last write failed
                if burst and await self._caught_up(r.consumer):
                    return
                continue
            async with self._lock:
                started = time.perf_counter()
                projected = await self._project(batch, r)
                fences = {(tp.topic, tp.partition): f for tp, f in self._log.fences.items()}
                sink = r.checkpoint.sink(projected, fences)
                # One write in flight at a time, in order: this batch's rows go once the
                # previous batch's are in ClickHouse (and its offsets committed).
                await self.settle()
                self._written = projected.written
                self._writing = asyncio.create_task(r.checkpoint(sink, projected, started))
            lag = await self._record_lag(r.consumer)
            self._batch_target = next_batch_size(
                self._batch_target, lag, floor=s.batch_max, ceiling=s.batch_max_behind
            )
            self.metrics.batch_target.set(self._batch_target)
            await self._mode.after_batch(r.consumer)
            if burst and await self._caught_up(r.consumer):
                return

    async def _fetch(self, consumer: AIOKafkaConsumer) -> Batch:
        """Up to the batch target: the first fetch waits up to the flush interval, then what
        is already buffered tops it up (one fetch returns what a single fetch response
        held, less than a grown target)."""
        target = self._batch_target
        batch: Batch = await consumer.getmany(
            timeout_ms=self.settings.flush_interval_ms, max_records=target
        )
        taken = sum(len(records) for records in batch.values())
        while 0 < taken < target:
            more = await consumer.getmany(timeout_ms=0, max_records=target - taken)
            if not more:
                break
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                taken += len(records)
        return batch

    async def _check_logs(self, r: _Run) -> None:
        async with self._lock:
            # Positions must include the write in flight.
            await self.settle()
            # It landed, or a newer fence dropped it: the next batch reads what ClickHouse
            # holds instead of carrying the facts of that write.
            self._written = None
            generation = await self._current_generation(r)
            await self._log.check(
                generation, r.consumer, r.lookups, r.probe, r.retrying, fencing=r.fencing
            )

    async def _current_generation(self, r: _Run) -> int:
        """The generation to write (a live projector follows a finished rebuild)."""
        generation = await self._mode.generation(self._generation, r.lookups.live_generation)
        if generation != self._generation:
            logger.warning("live generation is now %d (was %d)", generation, self._generation)
            self._generation = generation
            self._log.generation_moved(r.consumer)
        return generation

    # -- one batch ----------------------------------------------------------------------------

    async def _project(self, batch: Batch, r: _Run) -> Projected:
        """Decode, look up, project; follow the plan and count what it kept."""
        generation = await self._current_generation(r)
        # One registry for the whole batch: every call of it is judged alike.
        registry = self.universes.registry
        events = decode(batch, self._log.epochs, self.settings, registry)
        facts = await r.lookups.facts(generation, events)
        held = self._log.held(events.spans, facts.positions)
        held |= self._log.fenced(events.spans, facts.fences)
        projected = project(
            events, facts, self._written, window_ms=self.settings.attribution_window_ms,
            windows=registry.windows, rewound=self._log.rewound, origins=self._log.origins,
            held=held,
        )  # fmt: skip
        self._log.follow(projected.plan, events.spans, held, r.consumer)
        kept = projected.events
        for outcomes, _ in kept.contexts:
            # Once per call, as the edge counted them: what the plan skips was counted when
            # it was first written (by this process or another).
            for source, outcome in outcomes:
                self.metrics.click_context.labels(source, outcome).inc()
        for failure in kept.failures:
            await self._dead_letter(r.dead_letters, failure)
        for tp, first in projected.plan.keep_from.items():
            new = sum(1 for record in batch[tp] if record.offset >= first)
            self.metrics.events.labels(tp.topic).inc(new)
            self.metrics.already_written.inc(len(batch[tp]) - new)
        self.metrics.batch_size.observe(
            len(kept.clicks) + len(kept.calls) + len(kept.refunds) + len(kept.failures)
        )
        for reason in projected.duplicates:
            self.metrics.duplicates.labels(reason).inc()
        for reason in projected.rejects:
            self.metrics.rejects.labels(reason).inc()
        for status, reason in projected.refunds:
            self.metrics.refunds.labels(status, reason).inc()
        self._log.written_up_to(projected.written.next_offsets)
        return projected

    async def _dead_letter(self, producer: AIOKafkaProducer, failure: Failure) -> None:
        at = where(failure.position)
        logger.error("dead letter %s: %s", at, failure.reason)
        headers = [("reason", failure.reason.encode()), ("source", at.encode())]
        try:
            await producer.send_and_wait(
                self.settings.kafka.topics.dead_letters,
                failure.value,
                key=failure.key,
                headers=headers,
            )
        except KafkaError as e:
            # The dead_letters table still records it; the topic copy is a convenience.
            logger.error("could not publish dead letter %s: %s", at, e)
        self.metrics.dead_letters.inc()

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

    async def _record_lag(self, consumer: AIOKafkaConsumer) -> int:
        """Export each partition's lag; return their sum."""
        total = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - await consumer.position(tp))
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
                total += lag
        return total
