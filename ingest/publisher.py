"""Publishing off the request path, never losing an event to a slow, frozen or absent broker,
or to a full disk.

Handlers call :meth:`Publisher.publish`, which only appends to memory; the pixel calls
:meth:`Publisher.publish_later` instead: it queues what the call carried, and the background
task makes the events of a batch, in a few steps, as it builds the record batches. The
backlog is one queue, the on-disk spool (oldest) then memory: events reach Kafka in the order
they were received. One task sends it in batches and waits for the acknowledgements; a batch
not acknowledged within TRACKER_EDGE_ACK_DEADLINE_MS makes the broker count as not
answering, and is copied to the spool while it stays in flight. Another task moves memory to
the spool every TRACKER_EDGE_SPOOL_SYNC_MS while the broker does not answer in time, and
fsyncs it. Once the broker answers again the spool drains while new events wait in memory
behind it. A full spool or a failing disk leaves events in memory (up to
TRACKER_EDGE_QUEUE_MAX), never crashes, and is counted, logged and named by ``/readyz``.

What a hard kill (SIGKILL) can lose: with a healthy broker, the events sent but not yet
acknowledged (one linger interval plus a round trip); while the broker does not answer in
time, the events of the last TRACKER_EDGE_SPOOL_SYNC_MS (not yet moved to the spool), and
during the first TRACKER_EDGE_ACK_DEADLINE_MS of a freeze, what arrived in it; while the
spool drains, what waits in memory (at most the deadline's worth: older events go to the
spool). A power loss also loses what was not fsync'd yet (the same interval).

This module is the API and the lifecycle (start, readiness, the bounded drain on close);
the roles are layered, each a module: ``ingest/backlog.py`` (``publish``, and memory to the
spool, in order), ``ingest/sender.py`` (the supervised background task), ``ingest/flight.py``
(a batch in flight and its outcome), ``ingest/message.py`` (the message and its spooled
form), ``ingest/spool.py`` (the spool) and ``ingest/partitioner.py`` (Kafka's partitioner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from ingest.metrics import EdgeMetrics
from ingest.sender import STOP_TIMEOUT_S, Sender
from ingest.settings import EdgeSettings

logger = logging.getLogger(__name__)


class Publisher(Sender):
    def __init__(self, settings: EdgeSettings, metrics: EdgeMetrics, spool_dir: Path) -> None:
        super().__init__(settings, metrics, spool_dir)
        self._tasks: list[asyncio.Task[None]] = []

    def unready_reason(self) -> str | None:
        """Why events do not flow straight to the broker now, or None when they do."""
        reasons = [reason for reason in (self._publishing_state(), self._refusal_note()) if reason]
        return "; ".join(reasons) or None

    def _publishing_state(self) -> str | None:
        if self._restarting:
            return "publisher restarting after an error (events are spooled)"
        if not self._tasks or self._tasks[0].done():
            return "publisher not running (events are spooled)"
        if not self._connected:
            return "broker not connected (events are spooled)"
        if not self._broker_ok:
            return (
                f"broker not acknowledging within {self._deadline_s:g} s "
                "(TRACKER_EDGE_ACK_DEADLINE_MS; events are spooled)"
            )
        if not self._spool.empty():
            return (
                f"draining the spool ({self._spool.pending_bytes} bytes; new events wait in "
                "memory behind it)"
            )
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(), name="publisher"),
            asyncio.create_task(self._keep_spool(), name="spool"),
        ]

    async def close(self) -> None:
        """Publish the queue and the spool (bounded by the drain timeout), then stop.

        Whatever could not be sent in time stays in the spool, fsync'd, and is published by
        the next start.
        """
        self._closing = True
        self._wakeup.set()
        run, spool = self._tasks or (None, None)
        if run is not None:
            try:
                await asyncio.wait_for(asyncio.shield(run), timeout=self._settings.drain_timeout_s)
            except TimeoutError:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        if spool is not None:
            spool.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await spool
        self._spool_unsent()
        self._spool.close()
        for log in (
            self._drops_log,
            self._disk_log,
            self._refusals_log,
            self._task_log,
            self._late_log,
        ):
            log.flush()  # the counts not reported yet
        if not self._spool.empty():
            logger.warning(
                "stopped with %d bytes spooled in %s; they are published at the next start",
                self._spool.pending_bytes, self._spool.directory,
            )  # fmt: skip
        if self._producer is not None:
            # Bounded: on a frozen broker the stop waits for the batches in flight, which are
            # in the spool by now.
            try:
                await asyncio.wait_for(self._producer.stop(), timeout=STOP_TIMEOUT_S)
            except TimeoutError:
                logger.warning("the producer did not stop within %.0fs", STOP_TIMEOUT_S)
            self._producer = None
