"""Child processes of the local stack: start with a log file, wait until healthy, stop in order."""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], bool]


class StartError(RuntimeError):
    """A service did not become healthy; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (probe, never hard-code: other stacks may be running)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_with(offset: int, host: str = "127.0.0.1") -> int:
    """A free port ``p`` such that ``p + offset`` is free too."""
    for _ in range(200):
        port = free_port(host)
        if port + offset < 65536 and not port_in_use(host, port + offset):
            return port
        port = secrets.randbelow(65535 - offset - 20000) + 20000
        if not port_in_use(host, port) and not port_in_use(host, port + offset):
            return port
    raise StartError(f"no free port p with p + {offset} free on {host}")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tcp_check(host: str, port: int) -> HealthCheck:
    return lambda: port_in_use(host, port)


def http_check(url: str, expect: str | None = None) -> HealthCheck:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own URL
                body = response.read().decode(errors="replace")
                return response.status == 200 and (expect is None or expect in body)
        except OSError:
            return False

    return check


def http_answers(url: str) -> HealthCheck:
    """Healthy once the server answers HTTP at all (an S3 endpoint refuses anonymous calls)."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own URL
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    return check


def _die_with_parent() -> None:
    # If the supervisor is killed outright, its children get SIGTERM instead of living on.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    health: HealthCheck
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    endpoint: str = ""
    startup_timeout: float = 60.0
    stop_timeout: float = 30.0
    # Files the program leaves outside the data folder, removed once it has stopped.
    leftovers: Sequence[Path] = ()
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env}
        # Own process group: a Ctrl-C in the terminal reaches the supervisor only, which then
        # stops the services in dependency order (edge drains before the broker goes away).
        self.process = subprocess.Popen(
            list(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist yet at this point
        )
        log.close()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StartError(
                    f"{self.name} exited with code {self.process.returncode} while starting\n"
                    + self.log_tail()
                )
            if self.health():
                return
            time.sleep(0.1)
        raise StartError(
            f"{self.name} not healthy after {self.startup_timeout:.0f}s\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self._clean_up()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0fs, killing it", self.name, self.stop_timeout)
            self.process.kill()
            self.process.wait()
        self._clean_up()

    def _clean_up(self) -> None:
        for path in self.leftovers:
            path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(f"  {self.name}| {line}" for line in text[-lines:])
