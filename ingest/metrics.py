"""The edge's Prometheus metrics, in a registry of its own (one per app, so tests can run many)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from ingest.latency import LatencyHistogram
from ingest.spool import DISK_ERROR, SPOOL_FULL

# Why an answered call's event was dropped (tracker_edge_events_dropped_total{reason}): memory
# full while the spool was full or its disk failing, memory full while the spool took events
# (the publisher fell behind), or the event could not be made (a bug, also counted in
# tracker_edge_handler_errors_total).
QUEUE_FULL = "queue_full"
MAKE_FAILED = "make_failed"
DROP_REASONS = (SPOOL_FULL, DISK_ERROR, QUEUE_FULL, MAKE_FAILED)
# The spool's disk operations whose failures are counted (ingest/spool.py).
SPOOL_OPERATIONS = ("write", "truncate", "rotate", "sync", "cursor", "remove", "read", "check")

# From a pixel handled in ~10 us to an API batch of 1,000 sales; past 1 s is an incident.
REQUEST_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
ENDPOINTS = ("pixel", "click", "api")


class Tally:
    """A count kept for the hot path as a plain int, added to its Prometheus counter by
    :meth:`flush` (``EdgeMetrics.flush``, before each scrape of /metrics).

    prometheus_client's ``Counter.inc`` takes a lock and makes a few Python calls: about 1 us
    in place, the costliest line of the pixel's handler (py-spy, 2 workers at 16 connections).
    No lock here: the event loop that counts is the one that serves /metrics.
    """

    __slots__ = ("_counter", "count")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self.count = 0

    def flush(self) -> None:
        count, self.count = self.count, 0
        if count:
            self._counter.inc(count)


class EdgeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # The default registry's process_*, python_info and python_gc_* series, which
        # dashboards and the alerts' "is it up, is it leaking" questions expect.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        # Timed by the handlers, from their start to the answer handed to aiohttp (the
        # socket write after it is not included). A histogram of our own: see latency.py.
        self.request_seconds = LatencyHistogram(
            "tracker_edge_request_duration_seconds",
            "Time from the handler's start to its answer, by endpoint (pixel, click, api)",
            label="endpoint", values=ENDPOINTS, buckets=REQUEST_BUCKETS, registry=r,
        )  # fmt: skip
        self.pixel_seconds = self.request_seconds.labels("pixel")
        self.click_seconds = self.request_seconds.labels("click")
        self.api_seconds = self.request_seconds.labels("api")
        # NaN until the app hands over its readiness (report_readiness): unknown, never a
        # made-up 0 or 1 that an alert would act on.
        self.ready = Gauge(
            "tracker_edge_ready",
            "1 while events flow straight to the broker (/readyz answers 200), else 0",
            registry=r,
        )
        self.ready.set(float("nan"))
        self.requests = Counter(
            "tracker_edge_requests", "Requests by endpoint and outcome",
            ["endpoint", "outcome"], registry=r,
        )  # fmt: skip
        # The pixel publishes every call as received; the projector decides what counts.
        self.sales_published = Tally(self.requests.labels("sales", "published"))
        self.rejects = Counter(
            "tracker_edge_rejects", "Sales the API refused at once, by reason", ["reason"],
            registry=r,
        )  # fmt: skip
        self.clicks = Counter(
            "tracker_edge_clicks", "Tracked link requests by outcome", ["outcome"], registry=r
        )
        # Exceptions a handler did not expect: the pixel still answered its GIF.
        self.handler_errors = Counter(
            "tracker_edge_handler_errors", "Unexpected exceptions in request handlers",
            ["endpoint"], registry=r,
        )  # fmt: skip
        self.published = Counter(
            "tracker_edge_events_published", "Events acknowledged by the broker", ["topic"],
            registry=r,
        )  # fmt: skip
        self.spooled = Counter(
            "tracker_edge_events_spooled", "Events written to the on-disk spool", registry=r
        )
        self.dropped = Counter(
            "tracker_edge_events_dropped",
            "Answered calls whose event was dropped, by reason (spool_full, disk_error: memory "
            "full too; queue_full; make_failed)", ["reason"], registry=r,
        )  # fmt: skip
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self.spool_errors = Counter(
            "tracker_edge_spool_errors",
            "Failed disk operations of the spool, by operation (write: a full disk); the "
            "events stay in memory", ["operation"], registry=r,
        )  # fmt: skip
        for operation in SPOOL_OPERATIONS:
            self.spool_errors.labels(operation)
        self.late_batches = Counter(
            "tracker_edge_late_batches",
            "Batches not acknowledged within TRACKER_EDGE_ACK_DEADLINE_MS (the broker frozen, "
            "slow or away)", registry=r,
        )  # fmt: skip
        self.late_spooled = Counter(
            "tracker_edge_inflight_copies",
            "Events of a batch in flight copied to the spool (its acknowledgement late)",
            registry=r,
        )
        self.late_copies_skipped = Counter(
            "tracker_edge_inflight_copies_skipped",
            "Copies passed over unsent: their batch's late acknowledgement arrived", registry=r,
        )  # fmt: skip
        self.publish_errors = Counter(
            "tracker_edge_publish_errors", "Failed publish attempts (retried)", registry=r
        )
        self.queue_depth = Gauge(
            "tracker_edge_queue_depth", "Events in memory waiting to be published", registry=r
        )
        self.spool_bytes = Gauge(
            "tracker_edge_spool_bytes", "Bytes in the spool not yet published", registry=r
        )
        self.publish_latency = Histogram(
            "tracker_edge_publish_batch_seconds", "Time to publish one batch", registry=r
        )
        # Damage is skipped so publishing goes on; these say how much, and ops finds the bytes
        # (but a torn tail) under <spool>/damaged/.
        self.spool_damaged = Counter(
            "tracker_edge_spool_damaged",
            "Damaged spool ranges skipped (torn_tail, corrupt_frame, bad_record)",
            ["kind"], registry=r,
        )  # fmt: skip
        self.spool_damaged_bytes = Counter(
            "tracker_edge_spool_damaged_bytes", "Bytes of the damaged spool ranges skipped",
            ["kind"], registry=r,
        )  # fmt: skip
        self.publisher_restarts = Counter(
            "tracker_edge_publisher_restarts",
            "Restarts of the publishing task after an unexpected error", registry=r,
        )  # fmt: skip

    def report_readiness(self, unready_reason: Callable[[], str | None]) -> None:
        """Export /readyz's verdict (``unready_reason() is None``), computed at each scrape."""
        self.ready.set_function(lambda: float(unready_reason() is None))

    def flush(self) -> None:
        """Bring the hot path's tallies into their counters: before a scrape."""
        self.sales_published.flush()
