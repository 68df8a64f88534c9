"""The batch in flight: what the sender took, where its messages also lie in the spool, and
what its outcome leaves to do. Pure; the sender (``ingest/sender.py``) acts on it.

A batch taken from memory has no copy on disk until its acknowledgement is late: then the
backlog (``ingest/backlog.py``) writes its messages to the spool while it stays in flight, so
that a hard kill does not lose them, and records where each copy lies. When the outcome comes,
each delivered message's copy is acknowledged out of order (the spool's reader passes over
it: never sent twice), and each failed message is either in the spool already (it is sent
again from there) or, if no copy of it was written, goes back to the head of memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ingest.message import Message
from ingest.spool_cursor import Cursor
from ingest.types import Entry


@dataclass(slots=True)
class Flight:
    """A batch sent and not yet resolved.

    ``positions[i]`` is where ``made[i]`` lies in the spool, for the first
    ``len(positions)`` messages: all of a batch read from the spool, the part copied so far of
    a batch taken from memory.
    """

    entries: Sequence[Entry]
    # The spool's read position after a batch read from it; None for a batch from memory.
    cursor: Cursor | None = None
    # The messages, once made (the sender makes a memory batch's while it builds the record
    # batches); a spool batch's are made already.
    made: list[Message] | None = None
    positions: list[Cursor] = field(default_factory=list)
    late: bool = False

    @classmethod
    def from_spool(cls, messages: list[Message], positions: list[Cursor], cursor: Cursor) -> Flight:
        return cls(messages, cursor, messages, positions)

    @property
    def from_memory(self) -> bool:
        return self.cursor is None

    def on_disk(self) -> bool:
        """Whether every message of the batch has a copy in the spool (a kill loses none)."""
        return self.made is not None and len(self.positions) == len(self.made)

    def uncopied(self) -> list[Message]:
        """The made messages that have no copy in the spool yet, in order."""
        return [] if self.made is None else self.made[len(self.positions) :]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a resolved flight leaves to do: spool records to acknowledge out of order (their
    message was delivered though a copy lies in the spool), and messages to put back at the
    head of memory (failed, and not in the spool)."""

    delivered_copies: list[Cursor]
    back_to_memory: list[Message]


def outcome(flight: Flight, failed: Sequence[Message]) -> Outcome:
    """What remains of ``flight`` once the broker delivered all its messages but ``failed``."""
    made = flight.made or []
    failures = {id(m) for m in failed}
    copies = [p for m, p in zip(made, flight.positions, strict=False) if id(m) not in failures]
    back = [m for m in made[len(flight.positions) :] if id(m) in failures]
    return Outcome(copies, back)


def spill_due(
    *,
    broker_ok: bool,
    memory_age_s: float,
    deadline_s: float,
    since_refusal_s: float,
    retry_s: float,
) -> bool:
    """Whether the events in memory go to the spool now.

    While the broker does not acknowledge in time, at once (a hard kill then loses only what
    arrived since the last spill). While it does, only events that waited longer than the
    deadline (behind a long drain of the spool): memory holds what the broker is about to
    take, so that the spool drains while new events wait behind it. After a refusal (spool
    full, disk failing), memory is the buffer until the next try, ``retry_s`` later.
    """
    if since_refusal_s < retry_s:
        return False
    return not broker_ok or memory_age_s > deadline_s
