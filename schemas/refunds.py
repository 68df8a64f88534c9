"""A refund of ``POST /v1/refunds`` read under the rules: accepted, or rejected with the first
problem of its shape. Pure; the edge answers with it and the projector reads the published
event with it (projector/refunds.py then decides it against its sale)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from schemas.amount import AmountError, canonical, parse_amount
from schemas.raw import RefundRequest
from schemas.reasons import Reason
from schemas.rules import CURRENCY, DEFAULT_RULES, RAW_KEEP, Rules

# (universe, transaction_id): a transaction, and the scope of its refund ids.
SaleKey = tuple[str, str]
ZERO: Final = Decimal(0)
# The fields a refund object may have (others are ignored, as for sales).
REFUND_FIELDS: Final = ("universe", "id", "refund_id", "amount", "currency")


@dataclass(frozen=True, slots=True)
class RefundCall:
    """A refund as the projector reads it; ``amount`` "" = the whole remaining amount."""

    event_id: str
    received_at_ms: int
    status: Literal["accepted", "rejected"]
    reason: str
    universe: str
    transaction_id: str
    refund_id: str
    amount: str
    amount_raw: str
    currency: str
    client_hash: str = ""

    @property
    def sale(self) -> SaleKey:
        return (self.universe, self.transaction_id)


def read_refund(raw: RefundRequest, rules: Rules = DEFAULT_RULES) -> RefundCall:
    """The refund ``raw`` describes, accepted or rejected with the first problem found."""
    values = raw.fields
    universe = values.get("universe", "")
    transaction_id = values.get("id", "")
    refund_id = values.get("refund_id", "")
    amount_raw = values.get("amount", "")
    currency = values.get("currency", "")
    # As for sales: upper-case ASCII only (str.upper maps some letters onto ASCII ones).
    if currency.isascii():
        currency = currency.upper()
    reason = raw.problem or _problem(universe, transaction_id, refund_id, currency, rules)
    amount = ""
    if not reason and amount_raw:
        try:
            value = parse_amount(amount_raw)
        except AmountError as e:
            reason = e.reason
        else:
            if value == ZERO:
                reason = Reason.REFUND_AMOUNT_ZERO
            amount = canonical(value)
    accepted = not reason
    return RefundCall(
        event_id=raw.event_id, received_at_ms=raw.received_at_ms,
        status="accepted" if accepted else "rejected", reason=reason,
        universe=universe if accepted else universe[:RAW_KEEP],
        transaction_id=transaction_id if accepted else transaction_id[:RAW_KEEP],
        refund_id=refund_id if accepted else refund_id[:RAW_KEEP],
        amount=amount if accepted else "", amount_raw=amount_raw[:RAW_KEEP],
        currency=currency if accepted else currency[:RAW_KEEP], client_hash=raw.client_hash,
    )  # fmt: skip


def _problem(
    universe: str, transaction_id: str, refund_id: str, currency: str, rules: Rules
) -> str:
    if not universe:
        return Reason.UNIVERSE_MISSING
    if not rules.universe.fullmatch(universe):
        return Reason.UNIVERSE_INVALID
    # A refund must name its sale: no id is as invalid as a malformed one.
    if not rules.opaque_id.fullmatch(transaction_id):
        return Reason.ID_INVALID
    if not rules.opaque_id.fullmatch(refund_id):
        return Reason.REFUND_ID_INVALID
    if currency and not CURRENCY.fullmatch(currency):
        return Reason.CURRENCY_INVALID
    return ""
