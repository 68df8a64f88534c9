"""The projector's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

import contextlib
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

# The operations the loop retries (Projector._retrying's names). Exported at 0 from the start:
# a labelled counter born at 1 on its first retry is invisible to increase(), so an alert
# would miss the first burst. An operation missing here still counts, from its second retry.
RETRIED_OPERATIONS = (
    "connect to ClickHouse", "prepare the schema", "start the log probe", "read the log",
    "read the live generation", "read positions", "look up counted transactions",
    "look up clicks", "write to ClickHouse", "register fences", "wait for writes in flight",
)  # fmt: skip


class _Partition(Protocol):
    topic: str
    partition: int


class ProjectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The default registry's process_*, python_info and python_gc_* series.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.events = Counter(
            "tracker_projector_events",
            "Events consumed by topic",
            ["topic"],
            registry=self.registry,
        )
        self.rows = Counter(
            "tracker_projector_rows_written",
            "Rows written by table",
            ["table"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "tracker_projector_dead_letters",
            "Undecodable messages sent to the dead-letter topic",
            registry=self.registry,
        )
        self.rejects = Counter(
            "tracker_projector_rejected_calls",
            "Calls rejected (by the rules in force when read), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.click_context = Counter(
            "tracker_projector_click_context",
            "Click contexts of raw calls (cookie or click id) by outcome: valid, or why the "
            "token was ignored (context_forged, context_expired, context_other_universe, ...)",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "tracker_projector_duplicate_calls",
            "Calls not counted again, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.refunds = Counter(
            "tracker_projector_refunds",
            "Refund calls by status (counted, duplicate, rejected) and reason",
            ["status", "reason"],
            registry=self.registry,
        )
        self.retries = Counter(
            "tracker_projector_clickhouse_retries",
            "ClickHouse operations retried after a retriable failure, by operation",
            ["operation"],
            registry=self.registry,
        )
        for operation in RETRIED_OPERATIONS:
            self.retries.labels(operation)
        self.already_written = Counter(
            "tracker_projector_already_written_records",
            "Records fetched and not written, because ClickHouse already held them: written "
            "by another instance in a rebalance, or fetched again after a rewind (a restart "
            "resumes where ClickHouse's positions say, so it does not count here)",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "tracker_projector_batch_events",
            "Events per batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 40000, 80000),
            registry=self.registry,
        )
        self.batch_target = Gauge(
            "tracker_projector_batch_target",
            "Events the next batch may take: grows while behind, shrinks once caught up "
            "(TRACKER_PROJECTOR_BATCH_MAX .. TRACKER_PROJECTOR_BATCH_MAX_BEHIND)",
            registry=self.registry,
        )
        self.batch_latency = Histogram(
            "tracker_projector_checkpoint_seconds",
            "Flush plus commit time per batch",
            registry=self.registry,
        )
        self.fences = Counter(
            "tracker_projector_fences_registered",
            "Fences registered: one per partition each time it is given to this instance (or "
            "its generation moved), before its position is read (docs/exactly-once.md)",
            registry=self.registry,
        )
        self.fence_wait = Histogram(
            "tracker_projector_fence_wait_seconds",
            "Time a registration waited for the inserts that were running when it landed",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.fenced = Counter(
            "tracker_projector_fenced_batches",
            "Batches of a partition found registered by another instance since this one's "
            "fence: its writes of it are dropped by ClickHouse; it stops reading the "
            "partition, and registers again only if the group still gives it after a grace",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.log_regressions = Counter(
            "tracker_projector_log_regressions",
            "Times a partition was refused because its log no longer holds what was written "
            "(topic recreated, broker storage lost or restored); it waits for an operator",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "tracker_projector_lag",
            "Messages behind the high watermark (set when a partition's log is checked, before "
            "its first fetch, then after every batch)",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.universes = Gauge(
            "tracker_projector_universes",
            "Universes registered, as this projector has read the registry so far (0: every "
            "universe counts, unless TRACKER_UNIVERSES_REQUIRED)",
            registry=self.registry,
        )

    def set_lag(self, tp: _Partition, behind: int) -> None:
        self.lag.labels(tp.topic, str(tp.partition)).set(max(0, behind))

    def forget_lag(self, tp: _Partition) -> None:
        """A partition that moved to another instance: its last lag here would go stale (and
        could keep a lag alert firing on the instance that no longer reads it)."""
        with contextlib.suppress(KeyError):
            self.lag.remove(tp.topic, str(tp.partition))
