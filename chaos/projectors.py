"""A projector process of a scenario, watched from outside: its /readyz, its metrics, the
partitions it holds, and freezing it (SIGSTOP) as a GC pause or a VM stall would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.scale_out import assigned
from chaos.stack import ROOT, LocalStack
from schemas.environ import Environ
from schemas.kafka_settings import KafkaSettings


class Watched:
    """The stack's projector (``process`` None: the supervisor's) or one started beside it."""

    def __init__(
        self,
        stack: LocalStack,
        name: str,
        port: int,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.stack = stack
        self.name = name
        self.port = port
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else self.stack.wait_running(self.name)

    def readyz(self) -> tuple[int, str]:
        try:
            return self.stack.http_get(f"http://127.0.0.1:{self.port}/readyz")
        except OSError as e:
            return 0, str(e)

    def metrics(self) -> str:
        try:
            return self.stack.http_get(f"http://127.0.0.1:{self.port}/metrics")[1]
        except OSError:
            return ""

    def partitions(self) -> set[str]:
        return assigned(self.metrics())

    def stopped(self) -> bool:
        """Frozen by a SIGSTOP (its own or ours): state T in /proc."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def freeze(
        self,
        seconds: float,
        *,
        hook: bool,
        until: Callable[[], bool] = lambda: True,
        longest_s: float = 60.0,
    ) -> float | None:
        """SIGSTOP for ``seconds`` and then until ``until()`` holds (at most ``longest_s``): at
        once, or (``hook``) at its next batch's write, where its fault hook stops it after a
        SIGUSR1. Returns how long it was frozen; None: the hook did not stop it."""
        pid = self.pid
        if hook:
            os.kill(pid, signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while not self.stopped():
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGSTOP)
        began = time.monotonic()
        time.sleep(seconds)
        while not until() and time.monotonic() - began < longest_s:
            time.sleep(0.25)
        os.kill(pid, signal.SIGCONT)
        return time.monotonic() - began

    def resume(self) -> None:
        """SIGCONT, whatever happened (a scenario that failed half-way)."""
        with contextlib.suppress(OSError, RuntimeError):  # StackError: not running
            os.kill(self.pid, signal.SIGCONT)

    @staticmethod
    def wait_split(members: list[Watched], partitions: int, timeout: float) -> bool:
        """Wait until every member holds its share of ``partitions`` (the group settled)."""
        share = partitions // len(members)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(m.partitions()) == share for m in members):
                return True
            time.sleep(0.5)
        return False


def sample_sum(page: str, name: str) -> float:
    """The sum of every sample of ``name`` (whatever its labels) on a metrics page."""
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def retries(page: str) -> float:
    return sample_sum(page, "tracker_projector_clickhouse_retries_total")


def fence_waits(pages: list[str]) -> tuple[float, str]:
    """How many registrations waited for writes in flight, and the bucket bound that held
    the longest wait of them all ("+Inf" beyond the largest bucket)."""
    name = "tracker_projector_fence_wait_seconds"
    count = sum(sample_sum(page, f"{name}_count") for page in pages)
    cumulative: dict[str, float] = {}
    for page in pages:
        for line in page.splitlines():
            if line.startswith(f"{name}_bucket{{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                cumulative[bound] = cumulative.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    for bound, seen in sorted(
        cumulative.items(), key=lambda kv: float("inf") if kv[0] == "+Inf" else float(kv[0])
    ):
        if seen >= count:
            return count, bound
    return count, "+Inf"


@contextlib.contextmanager
def beside(stack: LocalStack, log: Path) -> Iterator[list[Watched]]:
    """The stack's projector and a second one in its consumer group, stopped on the way out
    (both resumed first, should one still be frozen)."""
    env = stack.projector_env()
    with log.open("ab") as out:
        second = subprocess.Popen(
            [sys.executable, "-m", "projector"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    members = [
        Watched(stack, "projector", stack.settings.projector_port),
        Watched(stack, "second", int(env["TRACKER_PROJECTOR_PORT"]), second),
    ]
    try:
        yield members
    finally:
        for m in members:
            m.resume()
        second.terminate()
        try:
            second.wait(timeout=60)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait()


def partitions_of(stack: LocalStack) -> int:
    """Partitions the projectors share: both topics'."""
    return 2 * KafkaSettings.from_env(Environ(stack.env)).partitions


def holds_all_for(member: Watched, partitions: int, *, seconds: float) -> Callable[[], bool]:
    """A condition: ``member`` has held all ``partitions`` for ``seconds`` (so it has written
    them since it took them over)."""
    since: list[float] = []

    def held() -> bool:
        if len(member.partitions()) < partitions:
            since.clear()
            return False
        if not since:
            since.append(time.monotonic())
        return time.monotonic() - since[0] >= seconds

    return held
