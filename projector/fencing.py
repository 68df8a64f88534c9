"""Fences: which instance may write a partition, decided by ClickHouse when a block is
inserted rather than by the projector before it writes (docs/exactly-once.md).

An instance given a partition registers a new fence for it (a row of ``fences_gN``: the
partition's next sequence number and a random fence), then waits for every insert into the
generation's writes tables that was running when the registration landed, then reads the
partition's position. Every row it writes carries the fence, and the writes table's view
admits only the rows whose fence is their partition's latest. So an instance paused with a
batch in hand, whose partitions the group gave away meanwhile, writes nothing when it wakes;
and a write that was admitted just before the registration is in ClickHouse before the new
owner reads where the partition stands.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Mapping, Sequence

from aiokafka import TopicPartition

from projector.dedupe import CountedCache
from projector.metrics import ProjectorMetrics
from projector.retry import Retrying
from projector.store import Store

logger = logging.getLogger(__name__)


def new_fence() -> int:
    """A random fence: 1 .. 2**63 (0 never names a registration)."""
    return secrets.randbits(63) + 1


def owner_name() -> str:
    """Who registered, for operators reading ``fences_gN``: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def registrations(
    partitions: Sequence[TopicPartition],
    sequences: Mapping[TopicPartition, int],
    fences: Mapping[TopicPartition, int],
) -> list[tuple[TopicPartition, int, int]]:
    """The rows registering ``fences``: each partition's next sequence number. Two instances
    that read the same last one register the same number; the higher fence wins the tie, the
    same for every reader."""
    return [(tp, sequences.get(tp, 0) + 1, fences[tp]) for tp in partitions]


class Fencing:
    """This instance's registrations, through the store and the retrying loop."""

    def __init__(
        self,
        store: Store,
        retrying: Retrying,
        metrics: ProjectorMetrics,
        counted: CountedCache,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._retrying = retrying
        self._metrics = metrics
        self._counted = counted
        self.owner = owner or owner_name()

    async def register(
        self, generation: int, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Register a new fence for each of ``partitions``; return them once every write that
        could have been admitted before them is in ClickHouse."""
        store = self._store
        sequences = await self._retrying(
            "register fences", lambda: store.fence_sequences(generation, partitions)
        )
        fences = {tp: new_fence() for tp in partitions}
        # Built once: a retry after an unclear failure sends the same rows (stored once).
        rows = registrations(partitions, sequences, fences)
        await self._retrying(
            "register fences", lambda: store.add_fences(generation, rows, self.owner)
        )

        async def writes_landed() -> float:
            return await store.wait_until_finished(await store.writes_in_flight(generation))

        waited = await self._retrying("wait for writes in flight", writes_landed)
        self._metrics.fence_wait.observe(waited)
        self._metrics.fences.inc(len(partitions))
        # What this instance remembers as counted came from writes that may have been dropped
        # (it wrote under a fence that was no longer the latest): from here on it asks
        # ClickHouse again.
        self._counted.clear()
        logger.info(
            "fences registered for %s (waited %.3f s for writes in flight)",
            ", ".join(f"{tp.topic}[{tp.partition}]#{fences[tp]:x}" for tp in partitions), waited,
        )  # fmt: skip
        return fences
