"""Apache Kafka and ClickHouse server containers for the test session (TRACKER_TEST_SERVICES=docker).

Imported only on that path, so the default session (the embedded stack) never needs
testcontainers or a Docker engine. Needs `pip install -e '.[docker]'` and a local Docker
engine; the project's own machines have none, so this path has not been run there.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from testcontainers.core.container import DockerContainer

from compose.processes import free_port

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "compose" / "docker-compose.yml"
START_TIMEOUT_S = 180.0


def production_image(repository: str) -> str:
    """The tag compose/docker-compose.yml deploys, so tests run against the same versions."""
    match = re.search(rf"image: ({re.escape(repository)}:\S+)", COMPOSE_FILE.read_text())
    if match is None:
        raise LookupError(f"{COMPOSE_FILE} names no {repository} image")
    return match.group(1)


def _wait(what: str, ready: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not become ready within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.5)


def _kafka(stack: ExitStack) -> str:
    # The broker must advertise the address clients dial, which is only known once the
    # host port is: so the host port is chosen first and bound explicitly. Loopback only:
    # a remote Docker host (DOCKER_HOST=tcp://...) is not supported.
    port = free_port()
    container = DockerContainer(production_image("apache/kafka")).with_bind_ports(9092, port)
    for name, value in {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        # Test groups come and go by the hundred: no 3 s wait before each first assignment.
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }.items():
        container = container.with_env(name, value)
    stack.enter_context(container)

    def started() -> bool:
        stdout, stderr = container.get_logs()
        return b"Kafka Server started" in bytes(stdout) + bytes(stderr)

    _wait("Kafka", started)
    return f"127.0.0.1:{port}"


def _clickhouse(stack: ExitStack) -> str:
    container = (
        DockerContainer(production_image("clickhouse/clickhouse-server"))
        .with_exposed_ports(8123)
        # The password-less `default` user reachable from the host, as on the embedded
        # ClickHouse (newer images read the first variable, older ones the second).
        .with_env("CLICKHOUSE_SKIP_USER_SETUP", "1")
        .with_env("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "1")
    )
    stack.enter_context(container)
    url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(8123)}"

    def pings() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    _wait("ClickHouse", pings)
    return url


@contextmanager
def docker_services() -> Iterator[tuple[str, str]]:
    """(Kafka bootstrap, ClickHouse URL) of fresh containers, removed when the block ends."""
    with ExitStack() as stack:
        yield _kafka(stack), _clickhouse(stack)
