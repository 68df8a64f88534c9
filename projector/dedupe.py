"""First call wins: which calls of a batch count, which are duplicates. Pure.

A transaction id counts once per universe, ever. A call without id is its own sale, unique by
its event id, so a redelivered copy of it (same event id) is still caught. The caller passes
what is already counted (from ClickHouse and the cache); calls are in partition order, and
every call of one transaction is in one partition, so "first" is the first offset.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

import msgspec

from schemas.events import SaleCall

Status = Literal["counted", "duplicate", "rejected"]
# (universe, transaction_id, event_id-if-no-transaction-id)
DedupeKey = tuple[str, str, str]


class Decision(msgspec.Struct, frozen=True):
    # A Struct, like the events: built once per event, ten times cheaper than a frozen dataclass.
    status: Status
    reason: str


COUNTED: Final = Decision("counted", "")
REDELIVERED: Final = Decision("duplicate", "redelivered")
ALREADY_COUNTED: Final = Decision("duplicate", "transaction_already_counted")


def dedupe_key(call: SaleCall) -> DedupeKey:
    if call.transaction_id:
        return (call.universe, call.transaction_id, "")
    return (call.universe, "", call.event_id)


def decide(calls: Sequence[SaleCall], counted: Mapping[DedupeKey, str]) -> list[Decision]:
    """One decision per call; ``counted`` maps a key to the event id that counted it."""
    first: dict[DedupeKey, str] = {}
    decisions: list[Decision] = []
    for call in calls:
        if call.status == "rejected":
            decisions.append(Decision("rejected", call.reason))
            continue
        key = dedupe_key(call)
        winner = first.get(key) or counted.get(key)
        if winner is None:
            first[key] = call.event_id
            decisions.append(COUNTED)
        elif winner == call.event_id:
            decisions.append(REDELIVERED)
        else:
            decisions.append(ALREADY_COUNTED)
    return decisions


class CountedCache:
    """A bounded LRU of keys known to be counted, to spare ClickHouse look-ups on refreshes.

    It holds positive facts ("key K was counted by event E"), remembered after a write that
    ClickHouse acknowledged. Such a fact is false when the write was dropped by its fence (the
    partition had a newer owner by then): the instance clears the cache whenever it registers
    a fence, which it does before writing any partition again (projector/fencing.py).
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[DedupeKey, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: DedupeKey) -> str | None:
        event_id = self._entries.get(key)
        if event_id is not None:
            self._entries.move_to_end(key)
        return event_id

    def clear(self) -> None:
        self._entries.clear()

    def put_all(self, items: Iterable[tuple[DedupeKey, str]]) -> None:
        if self._capacity == 0:
            return
        for key, event_id in items:
            self._entries[key] = event_id
            self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
