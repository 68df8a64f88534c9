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
    """Runs a step until it succeeds, backing off, unless its error is final or we stop."""

    def __init__(self, metrics: ProjectorMetrics, stop: asyncio.Event) -> None:
        self._metrics = metrics
        self._stop = stop

    async def __call__(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        backoff = 0.2
        while True:
            try:
                return await action()
            except ProjectorError as e:
                if not e.retriable or self._stop.is_set():
                    raise
                self._metrics.retries.labels(what).inc()
                logger.warning("%s failed (%s); retrying in %.1fs", what, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
