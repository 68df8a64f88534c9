"""Decoding a fetched batch: records become clicks and sale calls, or dead letters.

Raw calls and clicks are interpreted under the rules in force (projector/interpret.py);
a message that does not decode is kept as a dead letter, never a stuck partition.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from aiokafka import ConsumerRecord, TopicPartition

from projector.interpret import ContextOutcomes, read_click, read_sale
from projector.positions import record_fingerprint
from projector.rows import Position
from projector.settings import ProjectorSettings
from schemas.events import Click, EventDecodeError, SaleCall
from schemas.raw import decode_refund_request
from schemas.refunds import RefundCall, read_refund
from schemas.universes import Registry

logger = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Batch: TypeAlias = dict[TopicPartition, list[Record]]


def where(position: Position) -> str:
    return f"{position[0]}[{position[1]}]@{position[2]}"


@dataclass(frozen=True, slots=True)
class Failure:
    """A record that did not decode, and why: it becomes a dead letter."""

    position: Position
    reason: str
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Events:
    """A batch decoded; every record is in exactly one of clicks, calls, refunds and
    failures."""

    # First and last offset fetched per partition.
    spans: dict[TopicPartition, tuple[int, int]]
    clicks: list[tuple[Click, Position]]
    calls: list[tuple[SaleCall, Position]]
    failures: list[Failure]
    # The click-context outcomes of raw calls, counted once per call as the edge counted them.
    contexts: list[tuple[ContextOutcomes, Position]]
    # Refunds of the sales topic (rare: a batch without any looks nothing up for them).
    refunds: list[tuple[RefundCall, Position]] = dataclasses.field(default_factory=list)

    def kept(self, keep_from: Mapping[TopicPartition, int]) -> Events:
        """Only the records at or after ``keep_from`` of their partition (others are dropped)."""
        keep = {(tp.topic, tp.partition): first for tp, first in keep_from.items()}

        def keeps(at: Position) -> bool:
            return at[:2] in keep and at[2] >= keep[at[:2]]

        return Events(
            spans=self.spans,
            clicks=[(c, at) for c, at in self.clicks if keeps(at)],
            calls=[(c, at) for c, at in self.calls if keeps(at)],
            failures=[f for f in self.failures if keeps(f.position)],
            contexts=[(o, at) for o, at in self.contexts if keeps(at)],
            refunds=[(r, at) for r, at in self.refunds if keeps(at)],
        )


def decode(
    batch: Batch,
    epochs: Mapping[TopicPartition, int],
    s: ProjectorSettings,
    registry: Registry | None = None,
) -> Events:
    """Each record with its position (``epochs``: the log epoch each partition was checked in),
    calls judged under ``registry`` when given."""
    events = Events(
        spans={tp: (records[0].offset, records[-1].offset) for tp, records in batch.items()},
        clicks=[], calls=[], failures=[], contexts=[],
    )  # fmt: skip
    sales_topic = s.kafka.topics.sales
    for tp, records in batch.items():
        sales = tp.topic == sales_topic
        epoch = epochs.get(tp, 0)
        for record in records:
            position = (
                record.topic, record.partition, record.offset, epoch,
                record_fingerprint(record.key, record.value),
            )  # fmt: skip
            try:
                if sales:
                    call, outcomes = read_sale(
                        record.value, secret=s.secret,
                        window_ms=s.attribution_window_ms, rules=s.rules, registry=registry,
                    )  # fmt: skip
                    events.calls.append((call, position))
                    if outcomes:
                        events.contexts.append((outcomes, position))
                else:
                    click = read_click(record.value, secret=s.secret, rules=s.rules)
                    events.clicks.append((click, position))
            except EventDecodeError as e:
                # Not a sale: a refund (tried only now, so sales pay nothing for refunds).
                refund = decode_refund_request(record.value) if sales else None
                if refund is not None:
                    events.refunds.append((read_refund(refund, s.rules), position))
                else:
                    events.failures.append(Failure(position, str(e), record.key, record.value))
            except Exception as e:
                # A bug in interpreting one message must not stop its partition: it is kept
                # as a dead letter, and a rebuild after the fix reads it again.
                logger.exception("interpreting %s failed", where(position))
                reason = f"could not be interpreted: {e!r}"
                events.failures.append(Failure(position, reason, record.key, record.value))
    return events
