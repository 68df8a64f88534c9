"""Settings of the local stack (`make run`, `make up`, the test session), from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from schemas.environ import Environ


@dataclass(frozen=True, slots=True)
class StackSettings:
    data_dir: Path
    host: str
    edge_port: int
    projector_port: int
    kafka_port: int
    clickhouse_port: int
    s3_port: int
    # Set when the user points the stack at a real broker / ClickHouse: then none is started.
    external_kafka: str | None
    external_clickhouse: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        env = Environ(os.environ if environ is None else environ)
        return cls(
            data_dir=Path(env.text("TRACKER_DATA_DIR", ".data")),
            host="127.0.0.1",
            edge_port=env.port("TRACKER_EDGE_PORT", 8080),
            projector_port=env.port("TRACKER_PROJECTOR_PORT", 8081),
            kafka_port=env.port("TRACKER_KAFKA_PORT", 9092),
            clickhouse_port=env.port("TRACKER_CLICKHOUSE_PORT", 8123),
            s3_port=env.port("TRACKER_S3_PORT", 9390),
            external_kafka=(
                ",".join(env.bootstrap("TRACKER_KAFKA_BOOTSTRAP", "unused:1"))
                if env.text("TRACKER_KAFKA_BOOTSTRAP", "-") != "-"
                else None
            ),
            external_clickhouse=(
                env.http_url("TRACKER_CLICKHOUSE_URL", "http://unused")
                if env.text("TRACKER_CLICKHOUSE_URL", "-") != "-"
                else None
            ),
        )

    @property
    def kafka_bootstrap(self) -> str:
        return self.external_kafka or f"{self.host}:{self.kafka_port}"

    @property
    def clickhouse_url(self) -> str:
        return self.external_clickhouse or f"http://{self.host}:{self.clickhouse_port}"
