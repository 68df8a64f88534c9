"""The edge's Prometheus metrics, in a registry of its own (one per app, so tests can run many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EdgeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "tracker_edge_requests", "Requests by endpoint and outcome",
            ["endpoint", "outcome"], registry=r,
        )  # fmt: skip
        # Bound once: looking a label set up per request shows in profiles.
        # The pixel publishes every call as received; the projector decides what counts.
        self.sales_published = self.requests.labels("sales", "published")
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
            "tracker_edge_events_dropped", "Events lost because the spool was full", registry=r
        )
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
