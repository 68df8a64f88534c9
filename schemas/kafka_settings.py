"""The Kafka settings both services read alike, defined once and nested in each one's settings."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.environ import Environ
from schemas.topics import Topics


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap: tuple[str, ...]
    topics: Topics
    # Topics are created by whichever service starts first, so both need the same shape.
    partitions: int
    replication: int
    idempotence: bool

    @classmethod
    def from_env(cls, env: Environ) -> KafkaSettings:
        return cls(
            bootstrap=env.bootstrap("TRACKER_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            topics=Topics(env.text("TRACKER_TOPIC_PREFIX", "tracker.")),
            partitions=env.integer("TRACKER_KAFKA_PARTITIONS", 4, minimum=1),
            replication=env.integer("TRACKER_KAFKA_REPLICATION", 1, minimum=1),
            idempotence=env.flag("TRACKER_KAFKA_IDEMPOTENCE", True),
        )
