"""The end of a batch: write its rows, then cache what it counted, then commit its offsets.

Runs while the next batch is fetched and projected (one write in flight, in order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import TopicPartition

from projector.collector import FullCollections
from projector.faults import Faults
from projector.lookups import Lookups
from projector.metrics import ProjectorMetrics
from projector.project import Projected
from projector.retry import Retrying
from projector.settings import ProjectorSettings
from projector.sink import ClickHouseSink, Fences
from projector.store import Store

logger = logging.getLogger(__name__)

# Commits the offsets of written records (a live member of the group); None: nothing to
# commit to (a rebuild has no group).
Commit = Callable[[dict[TopicPartition, int]], Awaitable[None]]


class Checkpoint:
    """Writes batches and commits their offsets, in this order:

    Step 1. Flush the sink: one atomic insert per ledger table, retried while retriable
            under the same deduplication tokens, so a retry is stored once.
    Step 2. Cache the transactions the batch counted: later batches skip the look-up.
    Step 3. Commit the offsets of the records the batch kept. A failed commit is harmless:
            ClickHouse holds the positions, and the next owner skips what is written.

    If step 1 raises, nothing is cached or committed. ``TRACKER_PROJECTOR_FAULT`` (a test
    hook, projector/faults.py) kills the process before step 1, between its two inserts
    (clicks, then sales), after step 2 or after step 3, or freezes it before step 1.
    """

    def __init__(
        self,
        settings: ProjectorSettings,
        metrics: ProjectorMetrics,
        store: Store,
        lookups: Lookups,
        retrying: Retrying,
        *,
        commit: Commit | None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._store = store
        self._lookups = lookups
        self._retrying = retrying
        self._commit = commit
        self._batches = 0
        self._collections = FullCollections()
        self._faults = Faults(settings)

    def sink(self, projected: Projected, fences: Fences) -> ClickHouseSink:
        """The batch's rows, added to a sink of its generation's tables, each with the fence of
        its partition (as registered when the batch was projected)."""
        sink = ClickHouseSink(
            self._store, self._metrics, self._settings.kafka.topics.clicks, fences,
            between_inserts=lambda: self._faults.at("between-inserts", self._batches),
        )  # fmt: skip
        sink.clear(projected.written.generation)
        rows = projected.rows
        for add, added in (
            (sink.add_dead_letter, rows.dead_letters), (sink.add_click, rows.clicks),
            (sink.add_call, rows.calls), (sink.add_refund, rows.refunds),
        ):  # fmt: skip
            for row, position in added:
                add(row, position)
        return sink

    async def __call__(self, sink: ClickHouseSink, projected: Projected, started: float) -> None:
        self._batches += 1
        self._faults.at("before-write", self._batches)
        await self._retrying("write to ClickHouse", sink.flush)  # Step 1
        self._lookups.remember(projected.written.counted.items())  # Step 2
        self._metrics.batch_latency.observe(time.perf_counter() - started)
        self._faults.at("after-write", self._batches)
        offsets = projected.written.next_offsets
        if self._commit is not None and offsets:
            await self._commit(offsets)  # Step 3
            self._faults.at("after-commit", self._batches)
        # Last, outside the measured span and after the commit: the insert's leftovers in
        # reference cycles (projector/collector.py). It pauses the loop, not the batch.
        self._collections.after_write()
