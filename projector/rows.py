"""Pure mapping from decided events to the rows of the ledger tables."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from projector.attribution import Attribution
from projector.dedupe import Decision
from projector.refunds import RefundOutcome
from schemas.events import Click, SaleCall
from schemas.refunds import RefundCall

SALES_CALLS_COLUMNS: Final = (
    "universe", "transaction_id", "event_id", "source", "status", "reason", "amount_raw",
    "amount", "currency", "customer_id", "campaign_id", "link_id", "product", "clicked_at",
    "received_at", "client_hash", "kafka_topic", "kafka_partition", "kafka_offset", "log_epoch",
    "kafka_fingerprint",
)  # fmt: skip
CLICKS_COLUMNS: Final = (
    "universe", "customer_id", "campaign_id", "link_id", "product", "clicked_at", "event_id",
    "client_hash", "kafka_topic", "kafka_partition", "kafka_offset", "log_epoch",
    "kafka_fingerprint",
)  # fmt: skip
REFUNDS_CALLS_COLUMNS: Final = (
    "universe", "transaction_id", "refund_id", "event_id", "status", "reason", "amount_raw",
    "amount", "currency", "full_refund", "customer_id", "campaign_id", "link_id", "product",
    "sold_at", "received_at", "client_hash", "kafka_topic", "kafka_partition", "kafka_offset",
    "log_epoch", "kafka_fingerprint",
)  # fmt: skip
DEAD_LETTERS_COLUMNS: Final = (
    "kafka_topic", "kafka_partition", "kafka_offset", "log_epoch", "kafka_fingerprint", "reason",
    "payload",
)  # fmt: skip

# The intake tables (schemas/ddl/tables.sql): every ledger row of one topic goes into one
# insert, as its kind plus the union of the ledgers' columns (what a kind lacks is blank).
SALES_INTAKE_COLUMNS: Final = (
    "kind", *SALES_CALLS_COLUMNS, "refund_id", "full_refund", "sold_at", "payload",
)  # fmt: skip
CLICKS_INTAKE_COLUMNS: Final = ("kind", *CLICKS_COLUMNS, "reason", "payload")
# What the projector inserts: the intake's columns and the fence of the row's partition, which
# the writes table's view compares with the partition's latest (docs/exactly-once.md).
SALES_WRITES_COLUMNS: Final = (*SALES_INTAKE_COLUMNS, "fence")
CLICKS_WRITES_COLUMNS: Final = (*CLICKS_INTAKE_COLUMNS, "fence")

# A ledger row. Its DateTime64(3) values are milliseconds since the epoch (ints), which
# clickhouse-connect writes as the column's ticks unchanged: a Python datetime per value, built
# here and converted back to ticks there, cost about 2 us an event for nothing. A column must
# not mix ints and datetimes (clickhouse-connect reads the first value to choose). A call's
# Decimal amount stays the canonical decimal string it already is: clickhouse-connect reads
# every Decimal value through str() (``Decimal(str(x))``), so a Decimal built here was only
# turned back into that string.
Row = tuple[object, ...]
# Where a record came from: topic, partition, offset, log epoch, record fingerprint. Every
# ledger row ends with it (the positions views read it).
Position = tuple[str, int, int, int, int]
ZERO: Final = Decimal(0)


def sales_call_row(
    call: SaleCall,
    decision: Decision,
    attribution: Attribution | None,
    position: Position,
) -> Row:
    """The ledger row of one call; only counted calls carry an attribution."""
    a = attribution or Attribution(customer_id=call.customer_id or call.click_customer_id)
    return (
        call.universe, call.transaction_id, call.event_id, call.source, decision.status,
        decision.reason, call.amount_raw, call.amount or "0",
        call.currency, a.customer_id, a.campaign_id, a.link_id, a.product,
        a.clicked_at_ms or None,
        call.received_at_ms, call.client_hash, *position,
    )  # fmt: skip


def refund_call_row(refund: RefundCall, outcome: RefundOutcome, position: Position) -> Row:
    """The ledger row of one refund call. A counted one carries its amount and its sale's
    attribution and currency; any other keeps what it asked for."""
    sale = outcome.sale
    if sale is None:
        amount = Decimal(refund.amount) if refund.amount else ZERO
        return (
            refund.universe, refund.transaction_id, refund.refund_id, refund.event_id,
            outcome.decision.status, outcome.decision.reason, refund.amount_raw, amount,
            refund.currency, 0, "", "", "", "", None, refund.received_at_ms,
            refund.client_hash, *position,
        )  # fmt: skip
    return (
        refund.universe, refund.transaction_id, refund.refund_id, refund.event_id,
        outcome.decision.status, outcome.decision.reason, refund.amount_raw, outcome.amount,
        sale.currency, int(outcome.full), sale.customer_id, sale.campaign_id, sale.link_id,
        sale.product, sale.sold_at_ms or None,
        refund.received_at_ms, refund.client_hash, *position,
    )  # fmt: skip


def click_row(click: Click, position: Position) -> Row:
    return (
        click.universe, click.customer_id, click.campaign_id, click.link_id, click.product,
        click.clicked_at_ms, click.event_id, click.client_hash, *position,
    )  # fmt: skip


def dead_letter_row(position: Position, reason: str, payload: bytes | None) -> Row:
    return (*position, reason, (payload or b"").decode("utf-8", errors="replace"))


_EPOCH: Final = 0  # DateTime64 blank: the epoch, in milliseconds like every timestamp here
# The blank of an intake column a kind does not have (strings: "").
_BLANKS: Final[dict[str, object]] = {
    "amount": ZERO, "clicked_at": None, "sold_at": None, "received_at": _EPOCH,
    "kafka_partition": 0, "kafka_offset": 0, "log_epoch": 0, "kafka_fingerprint": 0,
    "full_refund": 0,
}  # fmt: skip


class Intake:
    """How the rows of a topic's ledgers become rows of its writes table: the intake's columns,
    then the fence (the last column)."""

    def __init__(self, columns: tuple[str, ...], blanks: dict[str, object] | None = None) -> None:
        self.columns = columns
        blanks = _BLANKS if blanks is None else blanks
        self._blank = tuple(blanks.get(c, "") for c in columns)
        self._at: dict[tuple[str, ...], tuple[tuple[int, ...], int]] = {}

    def row(self, kind: str, columns: tuple[str, ...], row: Row, fence: int) -> Row:
        at = self._at.get(columns)
        if at is None:
            indexes = tuple(self.columns.index(c) for c in columns)
            # A ledger whose columns open the intake's (calls, clicks: most rows) is copied
            # whole and padded, not placed column by column.
            prefix = len(columns) if indexes == tuple(range(1, len(columns) + 1)) else 0
            at = self._at[columns] = (indexes, prefix)
        indexes, prefix = at
        if prefix:
            return (kind, *row, *self._blank[prefix + 1 : -1], fence)
        out = list(self._blank)
        out[0] = kind
        for i, value in zip(indexes, row, strict=True):
            out[i] = value
        out[-1] = fence
        return tuple(out)


SALES_INTAKE: Final = Intake(SALES_WRITES_COLUMNS)
CLICKS_INTAKE: Final = Intake(CLICKS_WRITES_COLUMNS, {**_BLANKS, "clicked_at": _EPOCH})
