"""The edge's copy of the universe registry: the API keys it holds (hashed), followed live.

Started in the background: the edge answers from its first second even with the broker away
(pixel calls are spooled); until the registry was read to its end, only the environment's
keys (TRACKER_API_KEYS) work and /readyz says why it is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from aiokafka.errors import KafkaError

from ingest.settings import EdgeSettings
from schemas.topics import ensure_topics
from schemas.universe_log import RegistryReader, RegistryUnavailable

logger = logging.getLogger(__name__)

RETRY_S: Final = 2.0
# A start under way when the edge stops is let finish (its clients then closed) this long.
CLOSE_WAIT_S: Final = 15.0


class EdgeRegistry:
    def __init__(self, settings: EdgeSettings) -> None:
        self._settings = settings
        self.reader = RegistryReader(
            settings.kafka.bootstrap, settings.kafka.topics.universes,
            required=settings.universes_required,
        )  # fmt: skip
        self._starting: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    def universe_of_key(self, key: str) -> str | None:
        return self.reader.registry.universe_of_key(key)

    def window_ms(self, universe: str, default_ms: int) -> int:
        """The universe's attribution window as registered, else ``default_ms``."""
        return self.reader.registry.window_ms(universe, default_ms)

    def unready_reason(self) -> str | None:
        return None if self.reader.caught_up else "universe registry not read yet"

    def start(self) -> None:
        self._starting = asyncio.create_task(self._start(), name="registry-start")

    async def close(self) -> None:
        self._closing.set()
        if self._starting is not None:
            # Not cancelled at once: a client cancelled half-way through its start leaks
            # its connection.
            try:
                await asyncio.wait_for(asyncio.shield(self._starting), CLOSE_WAIT_S)
            except TimeoutError:
                self._starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._starting
        await self.reader.stop()

    async def _start(self) -> None:
        s = self._settings
        while not self._closing.is_set():
            try:
                # The topic must exist before it is assigned: a reader of a missing topic
                # keeps stale metadata and never sees it appear.
                await ensure_topics(
                    s.kafka.bootstrap, s.kafka.topics, partitions=s.kafka.partitions,
                    replication=s.kafka.replication,
                )  # fmt: skip
                await self.reader.start()
                return
            except (KafkaError, RegistryUnavailable, OSError) as e:
                logger.warning("universe registry not readable yet (%s); retrying", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), RETRY_S)
