"""Settings of the local stack (`make run`, `make up`, the test session), from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from schemas.context import DATA_DIR_DEFAULT
from schemas.environ import ConfigError, Environ

# The S3 store's own services, in the order TRACKER_S3_INTERNAL_PORTS lists their ports.
S3_INTERNAL_PORTS = (
    "master", "master-grpc", "volume", "volume-grpc", "filer", "filer-grpc", "s3-grpc", "admin",
)  # fmt: skip
# SeaweedFS's built-in worker dials its admin server's gRPC at the admin port + 10000,
# whatever the flags say; the stack puts it there so the worker connects instead of
# logging a refused connection every second.
ADMIN_GRPC_OFFSET = 10_000


def _internal_ports(env: Environ, name: str, s3_port: int) -> tuple[int, ...]:
    raw = env.text(name, ",".join(str(s3_port + 1 + i) for i in range(len(S3_INTERNAL_PORTS))))
    try:
        ports = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be {len(S3_INTERNAL_PORTS)} ports, got {raw!r}") from None
    if len(ports) != len(S3_INTERNAL_PORTS) or not all(0 < p < 65536 for p in ports):
        raise ConfigError(
            f"{name} must list {len(S3_INTERNAL_PORTS)} ports "
            f"({', '.join(S3_INTERNAL_PORTS)}), got {raw!r}"
        )
    if ports[-1] + ADMIN_GRPC_OFFSET > 65535:
        raise ConfigError(f"{name}: the admin port must be at most {65535 - ADMIN_GRPC_OFFSET}")
    return ports


@dataclass(frozen=True, slots=True)
class StackSettings:
    data_dir: Path
    host: str
    edge_port: int
    projector_port: int
    kafka_port: int
    clickhouse_port: int
    s3_port: int
    # master, master-grpc, volume, volume-grpc, filer, filer-grpc, s3-grpc, admin
    s3_internal_ports: tuple[int, ...]
    edge_workers: int
    # Set when the user points the stack at a real broker / ClickHouse: then none is started.
    external_kafka: str | None
    external_clickhouse: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        env = Environ(os.environ if environ is None else environ)
        s3_port = env.port("TRACKER_S3_PORT", 9390)
        return cls(
            data_dir=Path(env.text("TRACKER_DATA_DIR", DATA_DIR_DEFAULT)),
            host="127.0.0.1",
            edge_port=env.port("TRACKER_EDGE_PORT", 8080),
            projector_port=env.port("TRACKER_PROJECTOR_PORT", 8081),
            kafka_port=env.port("TRACKER_KAFKA_PORT", 9092),
            clickhouse_port=env.port("TRACKER_CLICKHOUSE_PORT", 8123),
            s3_port=s3_port,
            s3_internal_ports=_internal_ports(env, "TRACKER_S3_INTERNAL_PORTS", s3_port),
            edge_workers=env.integer("TRACKER_EDGE_WORKERS", 1, minimum=1, maximum=64),
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

    def s3_ports(self) -> dict[str, int]:
        """Every port the S3 store listens on, by role (the admin's gRPC included)."""
        ports = dict(zip(S3_INTERNAL_PORTS, self.s3_internal_ports, strict=True))
        return {"s3": self.s3_port, **ports, "admin-grpc": ports["admin"] + ADMIN_GRPC_OFFSET}
