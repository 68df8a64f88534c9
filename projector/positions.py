"""Which records of a batch to write, and whether the log still holds what was written. Pure.

ClickHouse is the source of truth for progress: every ledger row carries its Kafka position,
its log epoch and a fingerprint of its record, and ``log_positions`` gives per partition and
epoch the next offset to write with the fingerprint of the record just below it. Kafka's
committed offset is only a hint. So records already written (a crash between write and
commit, a replay) are skipped, and a fetch that starts past what ClickHouse holds (a rebuild
swapped in tables that end earlier) rewinds instead of leaving a hole.

Skipping is only right while the log is the one we wrote from. A topic deleted and
recreated, a broker that lost its storage, an old data folder restored: the log starts again
below our position and "already written" would silently drop new records. So before a
partition is resumed its log is checked (:func:`verify`): the high watermark must not be
below the stored position, and the record just below it must be the one we wrote. When the
operator accepts a new log (``accept-log``), the partition starts a new *log epoch*: its
position starts afresh at a stated offset, while the rows of earlier epochs stay counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from aiokafka import TopicPartition

# -- fingerprints and stored positions ----------------------------------------------------------

UNKNOWN_FINGERPRINT = 0  # rows written before fingerprints existed


def record_fingerprint(key: bytes | None, value: bytes | None) -> int:
    """A 64-bit digest of a Kafka record's key and value, never 0 (0 means "not known").

    Computed from the record as fetched, so it works for dead letters too (they have no
    event id). Each part is length-framed: ``(b"ab", b"c")`` and ``(b"a", b"bc")`` differ.
    """
    h = hashlib.blake2b(digest_size=8)
    for part in (key, value):
        if part is None:
            h.update(b"\xff")
        else:
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return int.from_bytes(h.digest(), "big") or 1


@dataclass(frozen=True, slots=True)
class Stored:
    """What ClickHouse holds for one partition in its current log epoch."""

    epoch: int
    next_offset: int
    # Of the record at next_offset - 1; None when not known (written before fingerprints).
    fingerprint: int | None
    # False: an accepted epoch with nothing written yet, next_offset is where it starts.
    written: bool = True


# A row of Store.position_rows: topic, partition, epoch, (offset, fingerprint), accepted.
PositionRow = tuple[str, int, int, tuple[int, int], int]


def current_positions(rows: Iterable[PositionRow]) -> dict[TopicPartition, Stored]:
    """Each partition's position in its current epoch.

    Rows come from two sources: written positions (``accepted`` 0: next offset and the
    fingerprint below it, per epoch) and accepted epochs (``accepted`` 1: the offset the
    epoch starts at). The current epoch is the highest accepted one, else 0; an accepted
    epoch nothing was written in yet starts at its stated offset.
    """
    written: dict[tuple[TopicPartition, int], tuple[int, int]] = {}
    epochs: dict[TopicPartition, tuple[int, int]] = {}
    for topic, partition, epoch, (offset, fingerprint), accepted in rows:
        tp = TopicPartition(topic, int(partition))
        if accepted:
            # Two operators accepting at once: the lowest start wins, the same for everyone.
            current = epochs.get(tp)
            if current is None or (epoch, -offset) > (current[0], -current[1]):
                epochs[tp] = (int(epoch), int(offset))
        else:
            key = (tp, int(epoch))
            written[key] = max(written.get(key, (0, 0)), (int(offset), int(fingerprint)))
    result: dict[TopicPartition, Stored] = {}
    for tp in {tp for tp, _ in written} | set(epochs):
        epoch, start = epochs.get(tp, (0, 0))
        if (tp, epoch) in written:
            offset, fingerprint = written[(tp, epoch)]
            known = None if fingerprint == UNKNOWN_FINGERPRINT else fingerprint
            result[tp] = Stored(epoch, offset, known)
        elif epoch:
            result[tp] = Stored(epoch, start, None, written=False)
    return result


# -- is the log still the one we wrote from? ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogState:
    """A partition's log as it is now."""

    earliest: int
    high_watermark: int
    # Fingerprint of the record at the offset :func:`offset_to_compare` named; None when that
    # record was not there (or none was asked for).
    found: int | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    """Project the partition from ``offset``."""

    offset: int
    # (stored position, first offset the log still has): records retention removed before
    # we read them. They are gone for every reader; the gap is logged, not hidden.
    gap: tuple[int, int] | None = None
    # The fingerprint part of the check could not be done (none stored, or the record is
    # gone by retention): only the high watermark was checked.
    unverified: bool = False


@dataclass(frozen=True, slots=True)
class Regression:
    """The log no longer holds what was written: the partition must wait for an operator."""

    reason: str


Verdict = Resume | Regression


def offset_to_compare(stored: Stored | None, earliest: int, high_watermark: int) -> int | None:
    """The offset whose record :func:`verify` compares, or None when nothing is to read."""
    if stored is None or not stored.written or stored.fingerprint is None:
        return None
    below = stored.next_offset - 1
    return below if earliest <= below < high_watermark else None


def verify(stored: Stored | None, log: LogState) -> Verdict:
    """Resume the partition, or refuse it because its log went backwards."""
    if stored is None:
        return Resume(log.earliest)  # nothing written from this log: all of it is new
    position = stored.next_offset
    if log.high_watermark < position:
        return Regression(
            f"the log ends at {log.high_watermark} (high watermark), below the stored "
            f"position {position}"
        )
    if stored.written and stored.fingerprint is not None and log.earliest < position:
        if log.found != stored.fingerprint:
            found = "no record" if log.found is None else f"fingerprint {log.found:016x}"
            return Regression(
                f"the record at {position - 1} is not the one written (expected fingerprint "
                f"{stored.fingerprint:016x}, found {found})"
            )
        return Resume(position)
    return _unfingerprinted(stored, log)


def _unfingerprinted(stored: Stored, log: LogState) -> Resume:
    """Only the high watermark could be checked: nothing written in this epoch yet (its start
    is the position), no fingerprint stored, or retention removed the record below it."""
    position = stored.next_offset
    gap = (position, log.earliest) if log.earliest > position else None
    return Resume(max(position, log.earliest), gap=gap, unverified=stored.written)


# -- one batch ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    keep_from: dict[TopicPartition, int] = field(default_factory=dict)  # first offset to write
    rewind_to: dict[TopicPartition, int] = field(default_factory=dict)
    gaps_accepted: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    # Fetched from somewhere we did not put the consumer, or whose epoch changed: nothing of
    # it is written until its log is checked again.
    verify: set[TopicPartition] = field(default_factory=set)


def plan(
    spans: Mapping[TopicPartition, tuple[int, int]],
    next_offsets: Mapping[TopicPartition, int],
    rewound: Mapping[TopicPartition, int],
    origins: Mapping[TopicPartition, int] | None = None,
    held: Set[TopicPartition] = frozenset(),
) -> Plan:
    """``spans``: first and last offset fetched per partition.

    ``origins``: where each partition's fetch was meant to start (where we sought after
    checking its log, or rewound it, or the end of its previous batch). A fetch that starts
    *before* it was moved back by the client itself (an out-of-range reset to the earliest
    offset: the log changed under us), so "already written" cannot be trusted: check the log
    first. A fetch that starts *after* it is a gap in the log (offsets with no record: a
    broker that lost an unfinished write, retention): the rewind-then-accept path below
    handles it, logged once. Treating a gap as a reset checked and resumed the same offset
    forever (seen after a broker SIGKILL). ``held``: partitions to check again whatever was
    fetched (their epoch changed).

    ``rewound``: where we already rewound each partition to. If the fetch still starts later
    after that, the log itself has no such records (retention): accept the gap, once.
    """
    result = Plan()
    origins = origins or {}
    for tp, (first, last) in spans.items():
        expected = next_offsets.get(tp)
        origin = origins.get(tp)
        if tp in held or (origin is not None and first < origin):
            result.verify.add(tp)
        elif expected is None or first == expected:
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
