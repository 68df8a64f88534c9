"""Kafka topic names, derived from one prefix so that tests and tenants can isolate theirs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "tracker."

    @property
    def sales(self) -> str:
        return f"{self.prefix}sales"

    @property
    def clicks(self) -> str:
        return f"{self.prefix}clicks"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"

    @property
    def universes(self) -> str:
        """The universe registry (schemas/universe_log.py): one partition, so one order."""
        return f"{self.prefix}universes"

    def all(self) -> tuple[str, ...]:
        return (self.sales, self.clicks, self.dead_letters)


async def ensure_topics(
    bootstrap: tuple[str, ...], topics: Topics, *, partitions: int, replication: int
) -> None:
    """Create the topics that do not exist yet (idempotent; both services call it at start)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=list(bootstrap), request_timeout_ms=10_000)
    try:
        # Inside the try: a start that fails or is cancelled half-way leaves connections open.
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, 1 if name == topics.universes else partitions, replication)
            for name in (*topics.all(), topics.universes)
            if name not in existing
        ]
        if missing:
            # Another instance may create them between our list and our create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()
