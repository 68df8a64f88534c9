"""Test session services: a real Kafka-protocol broker and a real ClickHouse.

By default the session starts the embedded local stack (Tansu on a SeaweedFS S3 store, ClickHouse
from chdb-core) on free ports in a temporary folder, so a running `make run` is never
disturbed. Set TRACKER_KAFKA_BOOTSTRAP and/or TRACKER_CLICKHOUSE_URL to use real ones
instead, or TRACKER_TEST_SERVICES=docker to start Apache Kafka and ClickHouse server containers
(tests/containers.py; needs the `docker` extra and a Docker engine). A service that cannot be
started fails the run: it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import clickhouse_connect
import orjson
import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient

from compose.environment import service_environment
from compose.processes import free_port
from compose.settings import StackSettings
from compose.stack import Stack, free_ports_env, infrastructure
from helpers import Edge, eventually, running_edge
from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    clickhouse_url: str
    local_kafka: bool
    # The local broker's S3 store (None when a real broker is used).
    s3_endpoint: str | None
    s3_credentials: dict[str, str] | None


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def services(stack_dir: Path) -> Iterator[Services]:
    if os.environ.get("TRACKER_TEST_SERVICES", "local") == "docker":
        # Apache Kafka and ClickHouse server in containers; imported here only, so the
        # default path never needs testcontainers or a Docker engine.
        from containers import docker_services

        with docker_services() as (kafka_bootstrap, clickhouse_url):
            yield Services(kafka_bootstrap, clickhouse_url, False, None, None)
        return
    settings = StackSettings.from_env(
        {
            **{k: v for k, v in os.environ.items() if k.startswith("TRACKER_")},
            "TRACKER_DATA_DIR": str(stack_dir),
            **free_ports_env(),
        }
    )
    stack = Stack(infrastructure(settings), stack_dir / "logs")
    stack.start()
    credentials = stack_dir / "s3-credentials.json"
    local = orjson.loads(credentials.read_bytes()) if settings.external_kafka is None else None
    try:
        yield Services(
            kafka_bootstrap=settings.kafka_bootstrap,
            clickhouse_url=settings.clickhouse_url,
            local_kafka=settings.external_kafka is None,
            s3_endpoint=None if local is None else f"http://127.0.0.1:{settings.s3_port}",
            s3_credentials=local,
        )
    finally:
        stack.stop()


@pytest.fixture
def isolation() -> str:
    """A fresh name per test: its own topics, consumer group and ClickHouse database."""
    return "t" + uuid.uuid4().hex[:12]


TEST_API_KEY = "test-key-0123456789abcdef0123"


@pytest.fixture
def service_env(services: Services, isolation: str, tmp_path: Path) -> dict[str, str]:
    return {
        **service_environment(
            bootstrap=services.kafka_bootstrap,
            clickhouse_url=services.clickhouse_url,
            local_broker=services.local_kafka,
            secret="test-secret-" + "x" * 32,
            api_keys=f"demo:{TEST_API_KEY},shop_b:other-key-0123456789abcdef01",
            spool_dir=tmp_path / "spool",
            edge_port=free_port(),
            projector_port=free_port(),
            isolation=isolation,
        ),
        "TRACKER_PROJECTOR_FLUSH_INTERVAL_MS": "200",
        "TRACKER_KAFKA_LINGER_MS": "2",
        # Commands run with it as a shell would: no local stack's context (schemas/context.py)
        # of the machine's own `.data` may fill in what the test leaves unset.
        "TRACKER_DATA_DIR": str(tmp_path / "no-stack"),
    }


@pytest.fixture
def edge_settings(service_env: dict[str, str]) -> EdgeSettings:
    return EdgeSettings.from_env(service_env)


@pytest.fixture
async def edge(edge_settings: EdgeSettings) -> AsyncIterator[Edge]:
    """The edge, connected to the broker, for the whole test; it drains at the end. A test
    that must see the drain, or prepares anything before the edge starts, uses
    ``running_edge`` itself."""
    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:

        async def ready() -> int:
            async with session.get(base + "/readyz") as response:
                return response.status

        # Ready means its topics exist: a reader started before they do keeps stale
        # metadata (read_topic) and never sees them.
        await eventually(ready, lambda status: status == 200)
        yield Edge(base, session)


@pytest.fixture
def projector_settings(service_env: dict[str, str]) -> ProjectorSettings:
    return ProjectorSettings.from_env(service_env)


@pytest.fixture
async def ch(services: Services, isolation: str) -> AsyncIterator[AsyncClient]:
    client = await clickhouse_connect.get_async_client(dsn=services.clickhouse_url)
    try:
        yield client
    finally:
        await client.command(f"DROP DATABASE IF EXISTS {isolation}")
        await client.close()
