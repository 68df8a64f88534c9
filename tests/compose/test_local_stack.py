"""`make up` / `make down` as a newcomer uses them: the whole stack in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from chaos.stack import LocalStack
from compose.stack import free_ports_env
from ingest.gif import PIXEL

ROOT = Path(__file__).resolve().parents[2]


def stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compose", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def clickhouse(port: int, sql: str) -> str:
    url = f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode({"query": sql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def wait_for_sales(port: int, expected: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = clickhouse(
                port, "SELECT transaction_id, amount FROM tracker.sales ORDER BY transaction_id"
            )
        except OSError:
            seen = "(not ready)"
        if seen == expected:
            return seen
        time.sleep(0.3)
    return seen


def test_up_then_down_then_up_keeps_the_sales(tmp_path: Path) -> None:
    free = free_ports_env()
    ports = {name: int(free[f"TRACKER_{name}_PORT"]) for name in ("EDGE", "CLICKHOUSE")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")},
        "TRACKER_DATA_DIR": str(tmp_path / "data"),
        **free,
    }
    try:
        up = stack("up", env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{ports['EDGE']}" in up.stdout

        pixel = f"http://127.0.0.1:{ports['EDGE']}/sales.php?universe=demo&amount=12,50&id=t1"
        with urllib.request.urlopen(pixel, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/gif"
            assert response.read() == PIXEL
        assert wait_for_sales(ports["CLICKHOUSE"], "t1\t12.5\n") == "t1\t12.5\n"

        again = stack("up", env)
        assert "already running" in again.stdout

        down = stack("down", env)
        assert down.returncode == 0, down.stdout + down.stderr
        status = stack("status", env)
        assert status.returncode == 0
        assert "not running" in status.stdout

        up = stack("up", env)
        assert up.returncode == 0, up.stdout + up.stderr
        # The sale survived, and the restarted projector did not count it again.
        pixel2 = pixel.replace("id=t1", "id=t2")
        with urllib.request.urlopen(pixel2, timeout=5) as response:
            assert response.status == 200
        expected = "t1\t12.5\nt2\t12.5\n"
        assert wait_for_sales(ports["CLICKHOUSE"], expected) == expected
    finally:
        stack("down", env)
    logs = (tmp_path / "data" / "logs" / "stack.log").read_text()
    assert "stopped" in logs


def test_run_refuses_a_port_already_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")},
            "TRACKER_DATA_DIR": str(tmp_path),
            **free_ports_env(),
            "TRACKER_EDGE_PORT": str(port),
        }
        result = stack("run", env)
    assert result.returncode == 2
    assert (
        f"edge: port {port} is already in use (choose another with TRACKER_EDGE_PORT)"
        in result.stderr
    )


def test_bad_configuration_fails_fast_with_a_readable_message(tmp_path: Path) -> None:
    env = {**os.environ, "TRACKER_DATA_DIR": str(tmp_path), "TRACKER_EDGE_PORT": "eighty"}
    result = stack("up", env)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: TRACKER_EDGE_PORT must be an integer, got 'eighty'"
    edge = subprocess.run(
        [sys.executable, "-m", "ingest"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert edge.returncode == 2
    assert (
        edge.stderr.strip()
        == "configuration error: TRACKER_EDGE_PORT must be an integer, got 'eighty'"
    )


def test_a_killed_service_is_restarted_and_status_shows_it(tmp_path: Path) -> None:
    local = LocalStack(tmp_path)
    local.up()
    try:
        first = local.kill("projector", signal.SIGKILL)
        local.wait_restarted("projector", first, timeout=60)
        status = local.compose("status")
        line = next(line for line in status.stdout.splitlines() if "projector" in line)
        assert "running" in line and "restarts 1" in line, status.stdout
        assert "(last exit: killed by SIGKILL)" in line
        # The others were left alone.
        assert all(
            info["restarts"] == 0 for name, info in local.services().items() if name != "projector"
        )
        stack_log = (local.settings.data_dir / "logs" / "stack.log").read_text()
        assert "projector exited (killed by SIGKILL); restarting it in 1s" in stack_log
    finally:
        local.down()
