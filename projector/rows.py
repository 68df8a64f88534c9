"""Pure mapping from decoded events to the rows of each ClickHouse table."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from schemas.events import SaleCall

SALES_CALLS_COLUMNS: Final = (
    "event_id",
    "universe",
    "transaction_id",
    "amount_raw",
    "amount",
    "currency",
    "customer_id",
    "click_id",
    "source",
    "status",
    "reason",
    "received_at",
    "kafka_partition",
    "kafka_offset",
)
SALES_COLUMNS: Final = (
    "universe",
    "transaction_id",
    "event_id",
    "amount",
    "currency",
    "customer_id",
    "sold_at",
)

Row = tuple[object, ...]


def _timestamp(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def sales_call_row(call: SaleCall, partition: int, offset: int) -> Row:
    return (
        call.event_id,
        call.universe,
        call.transaction_id,
        call.amount_raw,
        Decimal(call.amount) if call.amount else None,
        call.currency,
        call.customer_id,
        call.click_id,
        call.source,
        call.status,
        call.reason,
        _timestamp(call.received_at_ms),
        partition,
        offset,
    )


def sale_row(call: SaleCall) -> Row | None:
    """The counted-sale row of an accepted call; None for a rejected one."""
    if call.status != "accepted":
        return None
    return (
        call.universe,
        call.transaction_id,
        call.event_id,
        Decimal(call.amount),
        call.currency,
        call.customer_id,
        _timestamp(call.received_at_ms),
    )
