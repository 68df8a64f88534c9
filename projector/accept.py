"""`python -m projector accept-log`: project a partition's log as it is now, after it went back.

When a partition's log no longer holds what ClickHouse says was written (topic recreated,
broker storage lost or restored), projectors refuse it (positions.py's ``verify``). An
operator either rebuilds (``rebuild``: a new generation from the log as it is now) or accepts
the new log here: the partition starts a new log epoch at a stated offset (default: the
earliest the log has), recorded in ClickHouse so that every projector instance sees it within
a second. What was counted before stays counted; sales the new log repeats are duplicates by
their transaction id.

The command checks the log itself, the same way projectors do, so it accepts only what
really went backwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import TopicPartition

from projector.positions import Regression, verify
from projector.probe import LogProbe
from projector.settings import ProjectorSettings
from projector.store import Store

logger = logging.getLogger(__name__)


class AcceptError(Exception):
    """Bad input or nothing to accept: the message says which, for an operator."""


@dataclass(frozen=True, slots=True)
class Accepted:
    tp: TopicPartition
    epoch: int
    start_offset: int
    reason: str


async def accept_log(
    settings: ProjectorSettings,
    *,
    topic: str | None = None,
    partition: int | None = None,
    from_offset: int | None = None,
    write: Callable[[str], None] = print,
) -> list[Accepted]:
    """Accept the log of ``topic[partition]`` (or, with neither, of every partition whose log
    went backwards) from ``from_offset`` (default: its earliest offset)."""
    projected = (settings.kafka.topics.clicks, settings.kafka.topics.sales)
    if topic is not None and topic not in projected:
        raise AcceptError(f"unknown topic {topic!r}: the projector reads {' and '.join(projected)}")
    store = await Store.open(settings)
    probe = LogProbe(settings.kafka.bootstrap)
    try:
        generation = await store.prepare()
        await probe.start()
        candidates: list[TopicPartition] = []
        for name in projected if topic is None else (topic,):
            partitions = await probe.partitions(name)
            if partition is not None and partition not in partitions:
                known = ", ".join(str(p) for p in sorted(partitions)) or "none"
                raise AcceptError(
                    f"unknown partition {name}[{partition}]: its partitions are {known}"
                )
            wanted = partitions if partition is None else {partition}
            candidates.extend(TopicPartition(name, p) for p in sorted(wanted))
        stored = await store.positions(generation, candidates)
        logs = await probe.states({tp: stored.get(tp) for tp in candidates})
        regressed = {
            tp: verdict
            for tp in candidates
            if isinstance(verdict := verify(stored.get(tp), logs[tp]), Regression)
        }
        if not regressed:
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in candidates)
            raise AcceptError(
                f"nothing to accept: the log of {where} holds what was written "
                f"(generation {generation})"
            )
        accepted: list[Accepted] = []
        for tp, verdict in regressed.items():
            log = logs[tp]
            start = log.earliest if from_offset is None else from_offset
            if not log.earliest <= start <= log.high_watermark:
                raise AcceptError(
                    f"--from-offset {start} is outside the log of {tp.topic}[{tp.partition}] "
                    f"(offsets {log.earliest}..{log.high_watermark})"
                )
            epoch = stored[tp].epoch + 1
            await store.accept_epoch(generation, tp, epoch, start, verdict.reason)
            accepted.append(Accepted(tp, epoch, start, verdict.reason))
            write(
                f"accepted {tp.topic}[{tp.partition}]: {verdict.reason}; log epoch {epoch} "
                f"starts at {tp.topic}[{tp.partition}]@{start} (generation {generation})"
            )
        write(
            f"accept-log: {len(accepted)} partition(s) accepted; running projectors resume "
            "them within a few seconds, what was counted before stays counted"
        )
        return accepted
    finally:
        await probe.stop()
        await store.close()
