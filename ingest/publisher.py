"""Publishing off the request path, never losing an event to a slow or absent broker.

Handlers call :meth:`Publisher.publish`, which only appends: to the in-memory queue while
the broker is healthy, otherwise (or when the queue is full) to the on-disk spool. The pixel
calls :meth:`Publisher.publish_later` instead: it queues what the call carried, and the
background task makes the events of a batch, in a few steps, as it builds the record batches. Once
anything is spooled, later events are spooled too until the spool is drained, so events
reach Kafka in the order they were received. One background task sends the queue in
batches, then the spool, and waits for the acknowledgements; a batch that fails moves to
the spool with everything queued after it. That task is supervised: an unexpected error is
logged at once, counted, and the task restarted after a short pause, its batch in flight and
the queue moved to the spool first, so nothing answered is lost and the order is kept.

What a hard kill (SIGKILL, power loss) can lose: with a healthy broker, the events sent
but not yet acknowledged (one linger interval plus a round trip); while spooling, the
appends of the last TRACKER_EDGE_SPOOL_SYNC_MS (they are fsync'd at that interval).

This module is the API and the lifecycle (start, readiness, the bounded drain on close);
the roles are layered, each a module: ``ingest/backlog.py`` (``publish``: queue or spool, in
order), ``ingest/sender.py`` (the supervised background task), ``ingest/message.py`` (the
message and its spooled form), ``ingest/spool.py`` (the spool's format) and
``ingest/partitioner.py`` (Kafka's partitioner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from ingest.metrics import EdgeMetrics
from ingest.sender import Sender
from ingest.settings import EdgeSettings

logger = logging.getLogger(__name__)


class Publisher(Sender):
    def __init__(self, settings: EdgeSettings, metrics: EdgeMetrics, spool_dir: Path) -> None:
        super().__init__(settings, metrics, spool_dir)
        self._tasks: list[asyncio.Task[None]] = []

    def unready_reason(self) -> str | None:
        """Why events do not flow straight to the broker now, or None when they do."""
        if self._restarting:
            return "publisher restarting after an error (events are spooled)"
        if not self._tasks or self._tasks[0].done():
            return "publisher not running (events are spooled)"
        if not self._healthy:
            return "broker not connected (events are spooled)"
        if self._spool.full():
            return "spool full"
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(), name="publisher"),
            asyncio.create_task(self._sync_spool(), name="spool-sync"),
        ]

    async def close(self) -> None:
        """Publish the queue and the spool (bounded by the drain timeout), then stop.

        Whatever could not be sent in time stays in the spool, fsync'd, and is published by
        the next start.
        """
        self._closing = True
        self._wakeup.set()
        run, sync = self._tasks or (None, None)
        if run is not None:
            try:
                await asyncio.wait_for(asyncio.shield(run), timeout=self._settings.drain_timeout_s)
            except TimeoutError:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        if sync is not None:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
        self._spool_unsent()
        self._spool.close()
        if not self._spool.empty():
            logger.warning(
                "stopped with %d bytes spooled in %s; they are published at the next start",
                self._spool.pending_bytes, self._spool.directory,
            )  # fmt: skip
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
