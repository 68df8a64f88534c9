"""The heart of the projector, pure: a decoded batch and what ClickHouse holds -> ledger rows.

    plan       skip what is already written, rewind where ClickHouse holds less
    dedupe     the first call of a transaction counts, later ones are duplicates
    attribute  the last qualifying click of the customer
    refunds    each against its counted sale, in log order (refunds.py)
    rows       one row per click, call, refund and dead letter, each with its Kafka position

No I/O: the loop looks the facts up (lookups.py), follows the plan's rewinds and checks
(logcheck.py), and hands the rows to the checkpoint (checkpoint.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from decimal import Decimal

from aiokafka import TopicPartition

from projector.attribution import Attribution, attribute, customer_of
from projector.decode import Events
from projector.dedupe import COUNTED, DedupeKey, decide, dedupe_key
from projector.positions import Plan, Stored, plan
from projector.refunds import Refunded, SaleFacts, decide_refunds
from projector.rows import (
    Position,
    Row,
    click_row,
    dead_letter_row,
    refund_call_row,
    sales_call_row,
)
from schemas.events import Click, ClickContext, SaleCall
from schemas.refunds import SaleKey


@dataclass(frozen=True, slots=True)
class Facts:
    """What ClickHouse held for a batch when it was looked up (lookups.py)."""

    generation: int
    positions: Mapping[TopicPartition, Stored] = field(default_factory=dict)
    # Transactions already counted, among the batch's, with the event that counted them.
    counted: Mapping[DedupeKey, str] = field(default_factory=dict)
    # Stored clicks of the customers whose sales carry no qualifying click.
    clicks: list[ClickContext] = field(default_factory=list)
    # For the batch's refunds (looked up only when it has some): their transactions' counted
    # sales and what their counted refunds add up to.
    sales: Mapping[SaleKey, SaleFacts] = field(default_factory=dict)
    refunded: Mapping[SaleKey, Refunded] = field(default_factory=dict)
    # The latest fence of each partition of the batch (fencing.py): the loop compares it with
    # its own, to stop reading a partition that another instance registered since.
    fences: Mapping[TopicPartition, int] = field(default_factory=dict)


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
    # Its counted sales with their attribution (SaleFacts built only when a refund asks), and
    # the refunded state of every transaction its refunds touched.
    sales: list[tuple[SaleCall, Attribution]] = field(default_factory=list)
    refunded: dict[SaleKey, Refunded] = field(default_factory=dict)


@dataclass(slots=True)
class Rows:
    """The ledger rows of a batch, per table, each with its position (sink.py writes them)."""

    dead_letters: list[tuple[Row, Position]] = field(default_factory=list)
    clicks: list[tuple[Row, Position]] = field(default_factory=list)
    calls: list[tuple[Row, Position]] = field(default_factory=list)
    refunds: list[tuple[Row, Position]] = field(default_factory=list)


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
    # (status, reason) of every refund kept (for the metrics).
    refunds: list[tuple[str, str]] = field(default_factory=list)


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
    carried: Written | None = None
    if in_flight is not None and in_flight.generation == facts.generation:
        for tp, offset in in_flight.next_offsets.items():
            if tp in spans:
                next_offsets[tp] = max(next_offsets.get(tp, 0), offset)
        counted = {**in_flight.counted, **counted}
        earlier = in_flight.clicks
        carried = in_flight
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
    sold: list[tuple[SaleCall, Attribution]] = []
    sold_at: dict[SaleKey, int] = {}  # offset of this batch's counted sale, per transaction
    for (call, position), decision in zip(calls, decisions, strict=True):
        attribution = None
        if decision is COUNTED:
            known = known_clicks.get((call.universe, customer_of(call)), ())
            window = windows.get(call.universe, window_ms) if windows else window_ms
            attribution = attribute(call, known, window)
            pending.append((dedupe_key(call), call.event_id))
            sold.append((call, attribution))
            if call.transaction_id and events.refunds:
                sold_at[(call.universe, call.transaction_id)] = position[2]
        elif decision.status == "duplicate":
            duplicates.append(decision.reason)
        else:
            rejects.append(decision.reason)
        rows.calls.append((sales_call_row(call, decision, attribution, position), position))
    refunded, refund_outcomes = _refunds(events, facts, carried, (sold, sold_at), rows)
    written = Written(
        generation=facts.generation,
        next_offsets={tp: spans[tp][1] + 1 for tp in p.keep_from},
        counted=dict(pending),
        clicks=[c for c, _ in events.clicks],
        sales=sold,
        refunded=refunded,
    )
    return Projected(p, events, rows, written, duplicates, rejects, refund_outcomes)


def sale_facts(call: SaleCall, attribution: Attribution) -> SaleFacts:
    """What a counted sale gives its refunds: its amount, currency and attribution."""
    return SaleFacts(
        amount=Decimal(call.amount), currency=call.currency,
        customer_id=attribution.customer_id, campaign_id=attribution.campaign_id,
        link_id=attribution.link_id, product=attribution.product,
        sold_at_ms=call.received_at_ms,
    )  # fmt: skip


def _refunds(
    events: Events,
    facts: Facts,
    in_flight: Written | None,
    batch: tuple[list[tuple[SaleCall, Attribution]], Mapping[SaleKey, int]],
    rows: Rows,
) -> tuple[dict[SaleKey, Refunded], list[tuple[str, str]]]:
    """Decide the batch's refunds after its sales, each against what the log held before
    it: a sale of this batch counts for a refund only if it comes earlier in the partition
    (sale and refund share a key, so a partition), as it would in any other batching."""
    if not events.refunds:
        return {}, []
    sold, sold_at = batch
    wanted = {refund.sale for refund, _ in events.refunds}
    sales = dict(facts.sales)
    refunded = dict(facts.refunded)
    if in_flight is not None:
        for call, attribution in in_flight.sales:
            if (call.universe, call.transaction_id) in wanted:
                sales[(call.universe, call.transaction_id)] = sale_facts(call, attribution)
        # The write in flight started from older facts and holds every refund it counted.
        refunded.update(in_flight.refunded)
    batch_sales = {
        (call.universe, call.transaction_id): sale_facts(call, attribution)
        for call, attribution in sold
        if (call.universe, call.transaction_id) in sold_at
    }
    resolved = []
    for refund, position in events.refunds:
        sale = sales.get(refund.sale)
        offset = sold_at.get(refund.sale)
        if sale is None and offset is not None and offset < position[2]:
            sale = batch_sales[refund.sale]
        resolved.append((refund, sale))
    outcomes, after = decide_refunds(resolved, refunded)
    summary: list[tuple[str, str]] = []
    for (refund, position), outcome in zip(events.refunds, outcomes, strict=True):
        rows.refunds.append((refund_call_row(refund, outcome, position), position))
        summary.append((outcome.decision.status, outcome.decision.reason))
    return after, summary


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
