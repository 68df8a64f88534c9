"""Which records of a batch to write, given what ClickHouse already holds. Pure.

ClickHouse is the source of truth for progress: every ledger row carries its Kafka position
and ``positions`` gives the next offset to write per partition. Kafka's committed offset is
only where fetching starts. So records already written (a crash between write and commit,
a replay) are skipped, and a fetch that starts past what ClickHouse holds (a rebuild swapped
in tables that end earlier) rewinds instead of leaving a hole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka import TopicPartition


@dataclass(slots=True)
class Plan:
    keep_from: dict[TopicPartition, int] = field(default_factory=dict)  # first offset to write
    rewind_to: dict[TopicPartition, int] = field(default_factory=dict)
    gaps_accepted: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)


def plan(
    spans: Mapping[TopicPartition, tuple[int, int]],
    next_offsets: Mapping[TopicPartition, int],
    rewound: Mapping[TopicPartition, int],
) -> Plan:
    """``spans``: first and last offset fetched per partition.

    ``rewound``: where we already rewound each partition to. If the fetch still starts later
    after that, the log itself has no such records (retention): accept the gap, once.
    """
    result = Plan()
    for tp, (first, last) in spans.items():
        expected = next_offsets.get(tp)
        if expected is None or first == expected:
            result.keep_from[tp] = first
        elif last < expected:
            result.keep_from[tp] = last + 1  # all written already
        elif first < expected:
            result.keep_from[tp] = expected
        elif rewound.get(tp) == expected:
            result.keep_from[tp] = first
            result.gaps_accepted[tp] = (expected, first)
        else:
            result.rewind_to[tp] = expected
    return result
