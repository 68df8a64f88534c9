"""The edge's settings: one frozen object built from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.environ import Environ
from schemas.topics import Topics


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    host: str
    port: int
    kafka_bootstrap: tuple[str, ...]
    topics: Topics
    kafka_partitions: int
    kafka_replication: int
    kafka_idempotence: bool
    kafka_compression: str | None
    kafka_linger_ms: int
    kafka_batch_bytes: int
    queue_max: int
    drain_timeout_s: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EdgeSettings:
        env = Environ(os.environ if environ is None else environ)
        compression = env.choice(
            "TRACKER_KAFKA_COMPRESSION", "lz4", ("none", "gzip", "lz4", "zstd", "snappy")
        )
        return cls(
            host=env.text("TRACKER_EDGE_HOST", "127.0.0.1"),
            port=env.port("TRACKER_EDGE_PORT", 8080),
            kafka_bootstrap=env.bootstrap("TRACKER_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            topics=Topics(env.text("TRACKER_TOPIC_PREFIX", "tracker.")),
            kafka_partitions=env.integer("TRACKER_KAFKA_PARTITIONS", 4, minimum=1),
            kafka_replication=env.integer("TRACKER_KAFKA_REPLICATION", 1, minimum=1),
            kafka_idempotence=env.flag("TRACKER_KAFKA_IDEMPOTENCE", True),
            kafka_compression=None if compression == "none" else compression,
            kafka_linger_ms=env.integer("TRACKER_KAFKA_LINGER_MS", 10, maximum=10_000),
            kafka_batch_bytes=env.integer("TRACKER_KAFKA_BATCH_BYTES", 512 * 1024, minimum=1024),
            queue_max=env.integer("TRACKER_EDGE_QUEUE_MAX", 200_000, minimum=1),
            drain_timeout_s=env.integer("TRACKER_EDGE_DRAIN_TIMEOUT_S", 30, minimum=1),
        )
