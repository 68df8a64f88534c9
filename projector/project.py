"""The heart of the projector, pure: a decoded batch and what ClickHouse holds -> ledger rows.

    plan       skip what is already written, rewind where ClickHouse holds less
    dedupe     the first call of a transaction counts, later ones are duplicates
    attribute  the last qualifying click of the customer
    rows       one row per click, call and dead letter, each with its Kafka position

No I/O: the loop looks the facts up (lookups.py), follows the plan's rewinds and checks
(logcheck.py), and hands the rows to the checkpoint (checkpoint.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from projector.attribution import attribute, customer_of
from projector.decode import Events
from projector.dedupe import COUNTED, DedupeKey, decide, dedupe_key
from projector.positions import Plan, Stored, plan
from projector.rows import Position, Row, click_row, dead_letter_row, sales_call_row
from schemas.events import Click, ClickContext, SaleCall


@dataclass(frozen=True, slots=True)
class Facts:
    """What ClickHouse held for a batch when it was looked up (lookups.py)."""

    generation: int
    positions: Mapping[TopicPartition, Stored] = field(default_factory=dict)
    # Transactions already counted, among the batch's, with the event that counted them.
    counted: Mapping[DedupeKey, str] = field(default_factory=dict)
    # Stored clicks of the customers whose sales carry no qualifying click.
    clicks: list[ClickContext] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Written:
    """What a batch whose write is in flight will have put in ClickHouse.

    The next batch is projected while this one is written: its look-ups may not see these
    rows yet, so it takes them from here.
    """

    generation: int
    next_offsets: dict[TopicPartition, int]
    counted: dict[DedupeKey, str]
    clicks: list[Click]


@dataclass(slots=True)
class Rows:
    """The ledger rows of a batch, per table, each with its position (sink.py writes them)."""

    dead_letters: list[tuple[Row, Position]] = field(default_factory=list)
    clicks: list[tuple[Row, Position]] = field(default_factory=list)
    calls: list[tuple[Row, Position]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Projected:
    plan: Plan
    # The records the plan keeps (what this batch writes).
    events: Events
    rows: Rows
    written: Written
    # Why calls were not counted, one entry per call (for the metrics).
    duplicates: list[str]
    rejects: list[str]


def project(
    events: Events,
    facts: Facts,
    in_flight: Written | None,
    *,
    window_ms: int,
    windows: Mapping[str, int] | None = None,
    rewound: Mapping[TopicPartition, int] | None = None,
    origins: Mapping[TopicPartition, int] | None = None,
    held: Set[TopicPartition] = frozenset(),
) -> Projected:
    """The rows of a batch and what writing them adds.

    ``in_flight``: the previous batch, still being written; what it writes counts as
    written. ``windows``: attribution windows of universes that have their own.
    ``rewound``, ``origins``, ``held``: where the loop put each partition and which
    wait for a log check (see positions.plan).
    """
    spans = events.spans
    next_offsets = {tp: s.next_offset for tp, s in facts.positions.items()}
    counted: Mapping[DedupeKey, str] = facts.counted
    earlier: list[Click] = []
    if in_flight is not None and in_flight.generation == facts.generation:
        for tp, offset in in_flight.next_offsets.items():
            if tp in spans:
                next_offsets[tp] = max(next_offsets.get(tp, 0), offset)
        counted = {**in_flight.counted, **counted}
        earlier = in_flight.clicks
    p = plan(spans, next_offsets, rewound or {}, origins or {}, held)
    if p.rewind_to or p.verify or any(p.keep_from[tp] != spans[tp][0] for tp in p.keep_from):
        events = events.kept(p.keep_from)

    rows = Rows()
    for failure in events.failures:
        row = dead_letter_row(failure.position, failure.reason, failure.value)
        rows.dead_letters.append((row, failure.position))
    for click, position in events.clicks:
        rows.clicks.append((click_row(click, position), position))
    calls = events.calls
    decisions = decide([c for c, _ in calls], counted)
    known_clicks = _clicks(facts.clicks, calls, [*earlier, *(c for c, _ in events.clicks)])
    pending: list[tuple[DedupeKey, str]] = []
    duplicates: list[str] = []
    rejects: list[str] = []
    for (call, position), decision in zip(calls, decisions, strict=True):
        attribution = None
        if decision is COUNTED:
            known = known_clicks.get((call.universe, customer_of(call)), ())
            window = windows.get(call.universe, window_ms) if windows else window_ms
            attribution = attribute(call, known, window)
            pending.append((dedupe_key(call), call.event_id))
        elif decision.status == "duplicate":
            duplicates.append(decision.reason)
        else:
            rejects.append(decision.reason)
        rows.calls.append((sales_call_row(call, decision, attribution, position), position))
    written = Written(
        generation=facts.generation,
        next_offsets={tp: spans[tp][1] + 1 for tp in p.keep_from},
        counted=dict(pending),
        clicks=[c for c, _ in events.clicks],
    )
    return Projected(p, events, rows, written, duplicates, rejects)


def _clicks(
    stored: list[ClickContext], calls: list[tuple[SaleCall, Position]], clicks: list[Click]
) -> dict[tuple[str, str], list[ClickContext]]:
    """Stored clicks and clicks not stored yet (this batch's, the one in flight's)."""
    known: dict[tuple[str, str], list[ClickContext]] = {}
    for click in stored:
        known.setdefault((click.universe, click.customer_id), []).append(click)
    if not clicks:
        return known
    buyers = {(call.universe, customer_of(call)) for call, _ in calls}
    for c in clicks:
        key = (c.universe, c.customer_id)
        if key in buyers:
            known.setdefault(key, []).append(c.context())
    return known
