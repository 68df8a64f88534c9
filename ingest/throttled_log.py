"""A log line for events that can repeat once per request: at most one line per interval.

Anything a client can trigger at will (a malformed request, a connection left idle) would,
logged per occurrence, let one client flood the logs and hide everything else in them.
"""

from __future__ import annotations

import asyncio
import logging
import time


class ThrottledLog:
    """Logs the first event at once, counts the ones that follow within ``interval_s`` and
    reports that count in one line at the end of the interval (or at :meth:`flush`)."""

    def __init__(self, logger: logging.Logger, level: int, what: str, interval_s: float) -> None:
        self._logger = logger
        self._level = level
        self._what = what
        self._interval_s = interval_s
        self._quiet_until = 0.0
        self._since = 0.0
        self._suppressed = 0
        self._timer: asyncio.TimerHandle | None = None

    def log(self, msg: str, *args: object, exc_info: BaseException | bool | None = None) -> None:
        now = time.monotonic()
        if now >= self._quiet_until:
            self._logger.log(self._level, msg, *args, exc_info=exc_info)
            self._quiet_until = now + self._interval_s
            self._since = now
            return
        self._suppressed += 1
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): flush() reports the count
                return
            self._timer = loop.call_later(self._quiet_until - now, self._interval_ended)

    def flush(self) -> None:
        """Report what was counted and not logged yet (at shutdown, or at the interval's end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._suppressed:
            return
        now = time.monotonic()
        self._logger.log(
            self._level,
            "%d more %s in the last %.1f s (logged at most once per %.0f s)",
            self._suppressed, self._what, now - self._since, self._interval_s,
        )  # fmt: skip
        self._suppressed = 0
        # The summary is this interval's line: a flood that goes on is counted into the next.
        self._quiet_until = now + self._interval_s
        self._since = now

    def _interval_ended(self) -> None:
        self._timer = None
        self.flush()
