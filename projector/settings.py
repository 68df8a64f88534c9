"""The projector's settings: one frozen object built from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.ddl import valid_cluster_name, valid_database_name
from schemas.environ import ConfigError, Environ, mask_url
from schemas.kafka_settings import KafkaSettings
from schemas.rules import DEFAULT_RULES, Rules


@dataclass(frozen=True, slots=True)
class ProjectorSettings:
    host: str
    port: int
    kafka: KafkaSettings
    # The consumer group (TRACKER_PROJECTOR_GROUP, TRACKER_KAFKA_SESSION_TIMEOUT_MS) is the
    # projector's alone: the edge only produces, so these stay out of the shared KafkaSettings.
    group_id: str
    # Also how long a (Tansu) broker holds a new group's first join: half of it, 1 s at least.
    consumer_session_timeout_ms: int
    clickhouse_url: str = field(repr=False)
    clickhouse_database: str
    # Cluster mode: DDL ON CLUSTER this name, Replicated engines (docs/cluster.md); "" = one server.
    clickhouse_cluster: str
    # How long a ClickHouse call may wait to connect, and then for each read or send of its
    # answer, before it fails as retriable (docs/exactly-once.md): a frozen server is then
    # seen, logged and retried instead of blocking a write for the client's 300 s default.
    # Schema statements (start, rebuild) get their own, longer bound: ON CLUSTER DDL waits
    # for every replica.
    clickhouse_connect_timeout_s: int
    clickhouse_timeout_s: int
    clickhouse_ddl_timeout_s: int
    # Events per batch once caught up, and the most a batch grows to while behind
    # (projector/batching.py); equal: a fixed batch size.
    batch_max: int
    batch_max_behind: int
    flush_interval_ms: int
    attribution_window_ms: int
    dedupe_cache_size: int
    # Count only registered universes even while the registry is empty (production).
    universes_required: bool
    # How long start-up waits to read the universe registry to its end before giving up.
    registry_timeout_s: int
    # Verifies the click contexts and links of raw calls and clicks (the edge's secret).
    secret: str = field(repr=False)
    # How raw calls are read. Not from the environment: a rule changes with the code, and
    # a rebuild applies it to history (tests pass other rules to see it happen).
    rules: Rules = DEFAULT_RULES
    # Test hook: kill this process with SIGKILL at a checkpoint stage, or stop it with SIGSTOP
    # before the write of the batch after a SIGUSR1 (projector/faults.py, docs/operating.md).
    fault: str = ""
    fault_after_batches: int = 1

    def __repr__(self) -> str:
        # The URL may carry a password: show it masked, never in clear.
        return (
            f"ProjectorSettings(kafka={','.join(self.kafka.bootstrap)}, group={self.group_id}, "
            f"clickhouse={mask_url(self.clickhouse_url)}, database={self.clickhouse_database}"
            + (f", cluster={self.clickhouse_cluster})" if self.clickhouse_cluster else ")")
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProjectorSettings:
        env = Environ(os.environ if environ is None else environ)
        database = env.text("TRACKER_CLICKHOUSE_DATABASE", "tracker")
        if not valid_database_name(database):
            raise ConfigError(
                "TRACKER_CLICKHOUSE_DATABASE must be letters, digits and _, "
                f"not starting with a digit, got {database!r}"
            )
        cluster = env.text("TRACKER_CLICKHOUSE_CLUSTER", "")
        if cluster and not valid_cluster_name(cluster):
            raise ConfigError(
                "TRACKER_CLICKHOUSE_CLUSTER must be a cluster name of the servers' remote_servers "
                "(letters, digits, _ and -, starting with a letter or _, at most 63), "
                f"got {cluster!r}"
            )
        batch_max = env.integer("TRACKER_PROJECTOR_BATCH_MAX", 5000, minimum=1)
        batch_max_behind = env.integer(
            "TRACKER_PROJECTOR_BATCH_MAX_BEHIND", max(batch_max, 40_000), minimum=1
        )
        if batch_max_behind < batch_max:
            raise ConfigError(
                "TRACKER_PROJECTOR_BATCH_MAX_BEHIND must be at least TRACKER_PROJECTOR_BATCH_MAX "
                f"({batch_max}), got {batch_max_behind}"
            )
        return cls(
            host=env.text("TRACKER_PROJECTOR_HOST", "127.0.0.1"),
            port=env.port("TRACKER_PROJECTOR_PORT", 8081),
            kafka=KafkaSettings.from_env(env),
            group_id=env.text("TRACKER_PROJECTOR_GROUP", "tracker-projector"),
            consumer_session_timeout_ms=env.integer(
                "TRACKER_KAFKA_SESSION_TIMEOUT_MS", 10_000, minimum=1000, maximum=300_000
            ),
            clickhouse_url=env.http_url("TRACKER_CLICKHOUSE_URL", "http://127.0.0.1:8123"),
            clickhouse_database=database,
            clickhouse_cluster=cluster,
            clickhouse_connect_timeout_s=env.integer(
                "TRACKER_CLICKHOUSE_CONNECT_TIMEOUT_S", 5, minimum=1, maximum=300
            ),
            clickhouse_timeout_s=env.integer(
                "TRACKER_CLICKHOUSE_TIMEOUT_S", 10, minimum=1, maximum=3600
            ),
            clickhouse_ddl_timeout_s=env.integer(
                "TRACKER_CLICKHOUSE_DDL_TIMEOUT_S", 300, minimum=1, maximum=86_400
            ),
            batch_max=batch_max,
            batch_max_behind=batch_max_behind,
            flush_interval_ms=env.integer(
                "TRACKER_PROJECTOR_FLUSH_INTERVAL_MS", 1000, minimum=10, maximum=60_000
            ),
            attribution_window_ms=env.integer(
                "TRACKER_ATTRIBUTION_WINDOW_DAYS", 30, minimum=1, maximum=3650
            )
            * 86_400_000,
            dedupe_cache_size=env.integer("TRACKER_PROJECTOR_DEDUPE_CACHE", 200_000),
            universes_required=env.flag("TRACKER_UNIVERSES_REQUIRED", False),
            registry_timeout_s=env.integer(
                "TRACKER_REGISTRY_TIMEOUT_S", 60, minimum=1, maximum=3600
            ),
            secret=env.secret("TRACKER_SECRET", min_length=32),
            fault=env.choice(
                "TRACKER_PROJECTOR_FAULT",
                "none",
                (
                    "none",
                    "before-write",
                    "between-inserts",
                    "after-write",
                    "after-commit",
                    "stop-before-write",
                ),
            ).replace("none", ""),
            fault_after_batches=env.integer("TRACKER_PROJECTOR_FAULT_AFTER_BATCHES", 1, minimum=1),
        )
