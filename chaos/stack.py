"""A whole local stack (`python -m compose up`, supervisor included) in its own folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from compose.processes import free_port
from compose.settings import StackSettings
from compose.stack import applications, free_ports_env, stack_edge_secrets

ROOT = Path(__file__).resolve().parent.parent


class StackError(RuntimeError):
    """The stack did not do what a scenario needs; the message carries its output."""


class LocalStack:
    """Drives the stack as a user does (`compose up/down/status`), on free ports."""

    def __init__(self, folder: Path, **extra_env: str) -> None:
        self.folder = folder
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")},
            "TRACKER_DATA_DIR": str(folder / "data"),
            **free_ports_env(),
            **extra_env,
        }
        self.settings = StackSettings.from_env(self.env)

    @property
    def edge_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.edge_port}"

    def compose(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "compose", command],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    def up(self) -> None:
        result = self.compose("up")
        if result.returncode != 0:
            raise StackError(f"compose up failed:\n{result.stdout}\n{result.stderr}")

    def down(self) -> None:
        result = self.compose("down")
        if result.returncode != 0:
            raise StackError(f"compose down failed:\n{result.stdout}\n{result.stderr}")

    def universes(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m projector universes ARGS` against this stack's broker."""
        env = {**self.env, "TRACKER_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap}
        if self.settings.external_kafka is None:
            env["TRACKER_KAFKA_IDEMPOTENCE"] = "false"  # Tansu
        return subprocess.run(
            [sys.executable, "-m", "projector", "universes", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def register(self, universe: str, timeout: float = 30.0) -> None:
        """Register ``universe`` and wait until the projector has read it: a call projected
        before then is judged without it (`universe_unknown`)."""
        added = self.universes("add", universe)
        if added.returncode not in (0, 1):  # 1: registered already (a restarted stack)
            raise StackError(f"universes add {universe} failed:\n{added.stderr}")
        listed = self.universes("list")
        registered = len(listed.stdout.splitlines()) - 1  # the header line
        url = f"http://{self.settings.host}:{self.settings.projector_port}/metrics"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                text = ""
            for line in text.splitlines():
                if line.startswith("tracker_projector_universes ") and (
                    float(line.split()[1]) >= registered
                ):
                    return
            time.sleep(0.2)
        raise StackError(f"the projector did not read universe {universe} within {timeout:.0f}s")

    def services(self) -> dict[str, dict[str, Any]]:
        path = self.settings.data_dir / "run" / "stack.json"
        try:
            state: dict[str, Any] = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        services: dict[str, dict[str, Any]] = state.get("services", {})
        return services

    def wait_running(self, name: str, timeout: float = 120.0) -> int:
        """The pid of ``name`` once the supervisor reports it running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.services().get(name, {})
            if info.get("state") == "running" and info.get("pid"):
                return int(info["pid"])
            time.sleep(0.2)
        raise StackError(f"{name} not running after {timeout:.0f}s: {self.services()}")

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 120.0) -> int:
        """The pid of ``name`` once the supervisor runs a new process in place of ``old_pid``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.wait_running(name, timeout=max(deadline - time.monotonic(), 0.1))
            if pid != old_pid:
                return pid
            time.sleep(0.2)
        raise StackError(f"{name} was not restarted within {timeout:.0f}s: {self.services()}")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send ``sig`` to the service's whole process group (the edge's workers too)."""
        pid = self.wait_running(name)
        os.killpg(pid, sig)
        return pid

    def readyz(self) -> tuple[int, str]:
        """The edge's /readyz: status and body; (0, why) while it does not answer."""
        try:
            with urllib.request.urlopen(self.edge_url + "/readyz", timeout=2) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def edge_metrics(self) -> dict[str, float]:
        """The edge's /metrics samples, ``name{labels}`` -> value."""
        with urllib.request.urlopen(self.edge_url + "/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    @property
    def spool_dir(self) -> Path:
        """Where the stack's edge keeps its spool (a folder per worker inside)."""
        return self.settings.data_dir / "spool"

    def query(self, sql: str) -> list[list[str]]:
        url = f"{self.settings.clickhouse_url}/?" + urllib.parse.urlencode({"query": sql})
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own URL
            text = response.read().decode()
        return [line.split("\t") for line in text.splitlines()]

    def log(self, name: str) -> str:
        path = self.settings.data_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def projector_env(self) -> dict[str, str]:
        """The environment the stack gives its projector, on a port of its own: a second
        projector started with it joins the same consumer group."""
        (projector,) = [s for s in applications(self.settings) if s.name == "projector"]
        return {
            **self.env,
            **projector.env,
            **stack_edge_secrets(self.settings.data_dir.resolve(), self.env),
            "TRACKER_PROJECTOR_PORT": str(free_port()),
        }

    def http_get(self, url: str, timeout: float = 2.0) -> tuple[int, str]:
        """Status and body of a GET (an error status is an answer too)."""
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
