"""Reads what a partition's log holds now, for the check of positions.py's ``verify``.

A consumer of its own, outside any group: its look-ups (earliest offset, high watermark, one
record) never move the projector's fetch positions or its group membership.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from projector.errors import ProjectorError
from projector.positions import LogState, Stored, offset_to_compare, record_fingerprint

logger = logging.getLogger(__name__)

READ_TIMEOUT_S = 15.0


class LogProbe:
    def __init__(self, bootstrap: tuple[str, ...]) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=list(bootstrap),
            group_id=None,
            enable_auto_commit=False,
            # Only records at the offsets asked for count; a reset elsewhere reads as "absent".
            auto_offset_reset="earliest",
            max_poll_records=1,
        )

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except KafkaError as e:
            raise ProjectorError(f"log probe: Kafka unreachable: {e}", retriable=True) from e

    async def stop(self) -> None:
        await self._consumer.stop()

    async def partitions(self, topic: str) -> set[int]:
        try:
            await self._consumer.topics()  # refreshes the metadata
        except KafkaError as e:
            raise ProjectorError(f"log probe: {e}", retriable=True) from e
        return set(self._consumer.partitions_for_topic(topic) or ())

    async def states(
        self, stored: Mapping[TopicPartition, Stored | None]
    ) -> dict[TopicPartition, LogState]:
        """The log of each partition: earliest offset, high watermark, and the fingerprint of
        the record ``verify`` compares (when there is one to compare)."""
        tps = sorted(stored)
        if not tps:
            return {}
        try:
            earliest = await self._consumer.beginning_offsets(tps)
            # One fetch per partition, at the record below the stored position: it answers
            # with that record and with the high watermark. (The high watermark is taken from
            # a fetch, not from ListOffsets: some brokers, Tansu among them, answer "latest"
            # with a wrong offset.)
            targets = {tp: _target(stored[tp], earliest[tp]) for tp in tps}
            ends, records = await self._fetch(targets)
        except KafkaError as e:
            raise ProjectorError(f"log probe: {e}", retriable=True) from e
        result: dict[TopicPartition, LogState] = {}
        for tp in tps:
            compare = offset_to_compare(stored[tp], earliest[tp], ends[tp])
            found = records.get(tp) if compare == targets[tp] else None
            result[tp] = LogState(earliest[tp], ends[tp], found)
        return result

    async def _fetch(
        self, targets: Mapping[TopicPartition, int]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Each partition's high watermark, and the fingerprint of the record at its target
        offset when the log has one there."""
        consumer = self._consumer
        consumer.assign(list(targets))
        for tp, offset in targets.items():
            consumer.seek(tp, offset)
        ends: dict[TopicPartition, int] = {}
        found: dict[TopicPartition, int] = {}
        pending = set(targets)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                records = batch.get(tp)
                if highwater is None or (not records and targets[tp] < highwater):
                    continue  # no answer yet, or the record is there but not fetched yet
                pending.discard(tp)
                consumer.pause(tp)
                ends[tp] = highwater
                # Past the end, the fetch was reset to the earliest offset: another record.
                if records and records[0].offset == targets[tp]:
                    found[tp] = record_fingerprint(records[0].key, records[0].value)
        consumer.unsubscribe()
        if pending:
            raise ProjectorError(
                "log probe: no answer for "
                + ", ".join(f"{tp.topic}[{tp.partition}]@{targets[tp]}" for tp in sorted(pending))
                + f" within {READ_TIMEOUT_S:.0f}s",
                retriable=True,
            )
        return ends, found


def _target(stored: Stored | None, earliest: int) -> int:
    """Where to fetch: the record below the stored position (the one to compare)."""
    if stored is None:
        return earliest
    return max(earliest, stored.next_offset - (1 if stored.written else 0))
