"""Retrying a step while its failure is retriable: the one place that branches on the flag."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from projector.errors import ProjectorError
from projector.metrics import ProjectorMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_MAX_S = 10.0


class Retrying:
    """Runs a step until it succeeds, backing off, unless its error is final or we stop.

    While a step keeps failing, :attr:`health` says which and why (what /readyz answers): a
    ClickHouse that does not answer shows there within its timeout, not only in the log.
    """

    def __init__(self, metrics: ProjectorMetrics, stop: asyncio.Event) -> None:
        self._metrics = metrics
        self._stop = stop
        # Steps failing now: what -> (failures in a row, last error).
        self._failing: dict[str, tuple[int, ProjectorError]] = {}

    @property
    def health(self) -> str | None:
        """The first step that is failing now and why, or None."""
        for what, (failures, error) in self._failing.items():
            return f"{what} failing (retry {failures}): {error}"
        return None

    async def __call__(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        backoff = 0.2
        failures = 0
        try:
            while True:
                try:
                    return await action()
                except ProjectorError as e:
                    if not e.retriable or self._stop.is_set():
                        raise
                    failures += 1
                    self._failing[what] = (failures, e)
                    self._metrics.retries.labels(what).inc()
                    logger.warning("%s failed (%s); retrying in %.1fs", what, e, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            if failures:
                self._failing.pop(what, None)
