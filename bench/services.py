"""The services a run measures against, and how it starts and watches the measured ones.

Broker and ClickHouse come from compose's definitions, the broker on Tansu's memory engine,
as in every earlier run: figures stay comparable and measure the pipeline, not the local
S3 store's disk I/O (production runs Apache Kafka).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from compose.environment import service_environment
from compose.processes import free_port, http_check
from compose.stack import Stack, broker, clickhouse

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "x" * 32
HOST = "127.0.0.1"


def start(workdir: Path) -> tuple[Stack, str, str]:
    """Broker and ClickHouse on free ports: (the stack to stop, bootstrap, ClickHouse URL)."""
    kafka, ch = free_port(), free_port()
    stack = Stack(
        [
            broker(HOST, kafka, "memory://tansu/"),
            clickhouse(HOST, ch, workdir / "clickhouse", system_logs=True),
        ],
        workdir / "logs",
    )
    stack.start()
    return stack, f"{HOST}:{kafka}", f"http://{HOST}:{ch}"


def pid_of(stack: Stack, name: str) -> int:
    """The process id of one of the stack's services (its CPU is read from /proc)."""
    service = next(s for s in stack.services if s.name == name)
    assert service.process is not None, f"{name} is not running"
    return service.process.pid


def service_env(
    bootstrap: str, clickhouse_url: str, prefix: str, workdir: Path, edge_port: int | None = None
) -> dict[str, str]:
    """An edge's or a projector's environment, with its own database, topics and group."""
    return {
        **os.environ,
        **service_environment(
            bootstrap=bootstrap,
            clickhouse_url=clickhouse_url,
            local_broker=True,
            secret=SECRET,
            spool_dir=workdir / prefix / "spool",
            edge_port=edge_port or free_port(),
            projector_port=free_port(),
            isolation=prefix,
        ),
    }


def wait_http(url: str, timeout: float = 60) -> None:
    check = http_check(url)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not up")
        time.sleep(0.1)


def peak_rss_kb(pid: int) -> int:
    """VmHWM of a process and its children (workers), in KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total
