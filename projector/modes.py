"""The two set-ups of the same pipeline: live (a member of the consumer group, following the
live generation, committing offsets) and rebuild (every partition from where the target
generation ends, into that generation, no group, no commits)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from projector.checkpoint import Commit
from projector.errors import ProjectorError
from projector.logcheck import GENERATION_TTL_S
from projector.settings import ProjectorSettings

logger = logging.getLogger(__name__)

Progress = Callable[[AIOKafkaConsumer], Awaitable[None]]


class Member(Protocol):
    """What a set-up asks of the loop when partitions move."""

    def hold(self, partitions: set[TopicPartition]) -> None: ...

    async def release(self, partitions: set[TopicPartition]) -> None: ...


class Mode(Protocol):
    def group_id(self, settings: ProjectorSettings) -> str | None: ...

    def first_generation(self, live: int) -> int: ...

    async def generation(self, current: int, read_live: Callable[[], Awaitable[int]]) -> int: ...

    async def attach(
        self, consumer: AIOKafkaConsumer, topics: tuple[str, ...], member: Member
    ) -> None: ...

    def committer(self, consumer: AIOKafkaConsumer) -> Commit | None: ...

    def on_regression(self, message: str) -> None: ...

    async def after_batch(self, consumer: AIOKafkaConsumer) -> None: ...


class _FinishBatchBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions move only between batches: the one in hand is written and committed first."""

    def __init__(self, member: Member) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._member.release(revoked)
        if revoked:
            logger.info(
                "partitions revoked: %s", sorted(f"{t.topic}[{t.partition}]" for t in revoked)
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Nothing is fetched from them before their log is checked (the loop does it next).
        self._member.hold(assigned)
        if assigned:
            logger.info(
                "partitions assigned: %s", sorted(f"{t.topic}[{t.partition}]" for t in assigned)
            )


class Live:
    """A member of the consumer group, writing into the live generation (re-read at most
    every GENERATION_TTL_S, so a finished rebuild is picked up)."""

    def __init__(self) -> None:
        self._read_at = -GENERATION_TTL_S

    def group_id(self, settings: ProjectorSettings) -> str | None:
        return settings.group_id

    def first_generation(self, live: int) -> int:
        return live

    async def generation(self, current: int, read_live: Callable[[], Awaitable[int]]) -> int:
        """A rebuild's switch is seen within GENERATION_TTL_S: until then batches still go to
        the previous tables (kept for ``rebuild --drop-previous``'s grace), and the switch
        rewinds to where the new tables end, so nothing is lost either way."""
        now = time.monotonic()
        if now - self._read_at < GENERATION_TTL_S:
            return current
        live = await read_live()
        self._read_at = now
        return live

    async def attach(
        self, consumer: AIOKafkaConsumer, topics: tuple[str, ...], member: Member
    ) -> None:
        consumer.subscribe(topics, listener=_FinishBatchBeforeRevoke(member))

    def committer(self, consumer: AIOKafkaConsumer) -> Commit:
        async def commit(offsets: dict[TopicPartition, int]) -> None:
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as e:
                # Harmless: ClickHouse holds the positions, the next owner skips what is written.
                logger.warning("offset commit failed (%s); ClickHouse positions will be used", e)

        return commit

    def on_regression(self, message: str) -> None:
        """The partition is refused; the others go on."""

    async def after_batch(self, consumer: AIOKafkaConsumer) -> None:
        return None


class Rebuild:
    """Every partition, no group, into generation ``target``; ``progress`` after each batch."""

    def __init__(self, target: int, progress: Progress | None = None) -> None:
        self.target = target
        self._progress = progress

    def group_id(self, settings: ProjectorSettings) -> str | None:
        return None

    def first_generation(self, live: int) -> int:
        return self.target

    async def generation(self, current: int, read_live: Callable[[], Awaitable[int]]) -> int:
        return self.target

    async def attach(
        self, consumer: AIOKafkaConsumer, topics: tuple[str, ...], member: Member
    ) -> None:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(await _partitions(consumer, topic))
        ]
        consumer.assign(partitions)
        # The log check seeks where the generation's tables end: the rebuild's second pass
        # does not fetch again the clicks its first pass wrote.
        member.hold(set(partitions))

    def committer(self, consumer: AIOKafkaConsumer) -> None:
        return None

    def on_regression(self, message: str) -> None:
        raise ProjectorError(
            f"the log went backwards during the rebuild: {message}; run it again",
            retriable=False,
        )

    async def after_batch(self, consumer: AIOKafkaConsumer) -> None:
        if self._progress is not None:
            await self._progress(consumer)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer.topics()  # refreshes the metadata
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await asyncio.sleep(0.1)
    raise ProjectorError(f"topic {topic} has no partitions", retriable=False)
