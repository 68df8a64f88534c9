"""Keeps the local stack running: a service that dies is restarted with backoff.

What `restart: unless-stopped` does for a compose stack: the supervisor notices the exit,
logs why (exit code or signal, and the tail of the service's log), waits (1 s, doubling to
30 s, back to 1 s once a run lasted a minute) and starts it again, while the other services
keep running. Each service's state and restart count is what `make status` shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from compose.processes import Service
from compose.stack import Stack

logger = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
# A run this long counts as healthy: the next failure starts the backoff over.
STABLE_S = 60.0

State = Literal["running", "waiting", "starting"]


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Watch:
    """What the supervisor knows of one service."""

    service: Service
    state: State = "running"
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    backoff_s: float = BACKOFF_MIN_S
    next_step_at: float = 0.0

    def snapshot(self) -> dict[str, object]:
        process = self.service.process
        return {
            "state": self.state,
            "pid": process.pid if process is not None and self.service.alive() else None,
            "restarts": self.restarts,
            "last_exit": describe_exit(self.last_exit) if self.last_exit is not None else None,
            "endpoint": self.service.endpoint,
        }


class Supervisor:
    """Watches a started :class:`Stack`; call :meth:`tick` periodically."""

    def __init__(
        self,
        stack: Stack,
        on_change: Callable[[dict[str, dict[str, object]]], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stack = stack
        self._on_change = on_change
        self._clock = clock
        now = clock()
        self.watches = [Watch(service, started_at=now) for service in stack.services]

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {w.service.name: w.snapshot() for w in self.watches}

    def tick(self) -> None:
        changed = False
        for watch in self.watches:
            changed |= self._step(watch, self._clock())
        if changed:
            self._on_change(self.snapshot())

    def _step(self, w: Watch, now: float) -> bool:  # noqa: PLR0911 - one return per transition
        service = w.service
        if w.state == "running":
            if service.alive():
                return False
            self._failed(w, now, "exited")
            return True
        if w.state == "waiting":
            if now < w.next_step_at:
                return False
            w.restarts += 1
            logger.info("restarting %s (restart %d)", service.name, w.restarts)
            service.start(self._stack.log_dir)
            w.state = "starting"
            w.next_step_at = now + service.startup_timeout
            return True
        # starting
        if not service.alive():
            self._failed(w, now, "exited while starting")
            return True
        if service.health():
            w.state = "running"
            w.started_at = now
            logger.info("%s is healthy again after restart %d", service.name, w.restarts)
            return True
        if now >= w.next_step_at:
            logger.error(
                "%s not healthy %.0fs after its restart; stopping it",
                service.name, service.startup_timeout,
            )  # fmt: skip
            service.stop()
            self._failed(w, now, "did not become healthy")
            return True
        return False

    def _failed(self, w: Watch, now: float, what: str) -> None:
        process = w.service.process
        w.last_exit = process.returncode if process is not None else None
        if process is not None:
            # Its own children (the edge's workers) may outlive it: they drain and go.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        if now - w.started_at >= STABLE_S:
            w.backoff_s = BACKOFF_MIN_S
        logger.error(
            "%s %s (%s); restarting it in %.0fs, the other services keep running\n%s",
            w.service.name, what, describe_exit(w.last_exit), w.backoff_s,
            w.service.log_tail(15),
        )  # fmt: skip
        w.state = "waiting"
        w.next_step_at = now + w.backoff_s
        w.backoff_s = min(w.backoff_s * 2, BACKOFF_MAX_S)
