"""The edge's Prometheus metrics, in a registry of its own (one per app, so tests can run many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tracker_edge_requests",
            "Requests by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.rejects = Counter(
            "tracker_edge_rejects", "Rejected calls by reason", ["reason"], registry=self.registry
        )
        self.published = Counter(
            "tracker_edge_events_published",
            "Events acknowledged by the broker",
            ["topic"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "tracker_edge_events_dropped",
            "Events dropped because the queue was full",
            registry=self.registry,
        )
        self.publish_errors = Counter(
            "tracker_edge_publish_errors",
            "Failed publish attempts (retried)",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tracker_edge_queue_depth", "Events waiting to be published", registry=self.registry
        )
        self.publish_latency = Histogram(
            "tracker_edge_publish_batch_seconds",
            "Time to publish one batch",
            registry=self.registry,
        )
