"""The TRACKER_* environment of an edge and a projector: one function for the local stack,
the test session and the benchmark, so the three wire the services the same way."""

from __future__ import annotations

from pathlib import Path


def service_environment(
    *,
    bootstrap: str,
    clickhouse_url: str,
    local_broker: bool,
    secret: str,
    spool_dir: Path,
    edge_port: int,
    projector_port: int,
    api_keys: str = "",
    host: str | None = None,
    isolation: str | None = None,
) -> dict[str, str]:
    """Where the services find the broker and ClickHouse, and where they listen.

    ``isolation`` names a database, topic prefix and consumer group of their own (a test, a
    benchmark stage); without it the services use the defaults (database ``tracker``).
    ``local_broker``: Tansu, which has no idempotent producers; elsewhere the settings'
    default (idempotence on) stands.
    """
    env = {
        "TRACKER_KAFKA_BOOTSTRAP": bootstrap,
        "TRACKER_CLICKHOUSE_URL": clickhouse_url,
        "TRACKER_SECRET": secret,
        "TRACKER_EDGE_SPOOL_DIR": str(spool_dir),
        "TRACKER_EDGE_PORT": str(edge_port),
        "TRACKER_PROJECTOR_PORT": str(projector_port),
    }
    if api_keys:
        env["TRACKER_API_KEYS"] = api_keys
    if host is not None:
        env["TRACKER_EDGE_HOST"] = host
        env["TRACKER_PROJECTOR_HOST"] = host
    if isolation is not None:
        env["TRACKER_CLICKHOUSE_DATABASE"] = isolation
        env["TRACKER_TOPIC_PREFIX"] = f"{isolation}."
        env["TRACKER_PROJECTOR_GROUP"] = f"{isolation}-projector"
    if local_broker:
        env["TRACKER_KAFKA_IDEMPOTENCE"] = "false"
    return env
