"""Refunds, pure: a refund (read by schemas/refunds.py) decided against its counted sale.

A refund names its transaction; it counts when that transaction has a counted sale with
enough left, and it then carries exactly that sale's attribution (campaign, link, customer,
product, currency) into the rollups, on the refund's own day. Sale and refund share a Kafka
key, so the log orders them and a live projector and a rebuild decide alike. Outcomes:

    counted                  lowers the sale's turnover; the one that empties it also its purchase
    duplicate                refund id already counted for this transaction (counts once, ever)
    rejected <reason>        sale_unknown (not counted, or not yet: the refund id is not
                             burnt), refund_above_remaining, currency_mismatch, or the
                             refund object's own shape (refund id, amount, currency, universe)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from projector.dedupe import Decision
from schemas.reasons import Reason
from schemas.refunds import ZERO, RefundCall, SaleKey

REFUND_COUNTED: Final = Decision("counted", "")
REFUND_REDELIVERED: Final = Decision("duplicate", "redelivered")
REFUND_ALREADY_COUNTED: Final = Decision("duplicate", "refund_already_counted")


@dataclass(frozen=True, slots=True)
class SaleFacts:
    """What a counted sale gives its refunds: its amount and its attribution."""

    amount: Decimal
    currency: str
    customer_id: str = ""
    campaign_id: str = ""
    link_id: str = ""
    product: str = ""
    sold_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Refunded:
    """What a transaction's counted refunds add up to: the amount and their refund ids
    (each with the event that counted it)."""

    amount: Decimal = ZERO
    ids: Mapping[str, str] = field(default_factory=dict)

    def plus(self, refund_id: str, event_id: str, amount: Decimal) -> Refunded:
        return Refunded(self.amount + amount, {**self.ids, refund_id: event_id})


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """One refund decided: counted ones carry their amount, sale and whether it is full."""

    decision: Decision
    amount: Decimal = ZERO
    sale: SaleFacts | None = None
    # This refund brings the refunded total to the sale's amount: the purchase is undone.
    full: bool = False


def decide_refunds(
    refunds: Sequence[tuple[RefundCall, SaleFacts | None]],
    refunded: Mapping[SaleKey, Refunded],
) -> tuple[list[RefundOutcome], dict[SaleKey, Refunded]]:
    """One outcome per refund, in log order, and each touched transaction's refunds after.

    Each refund comes with the counted sale of its transaction as the log held it just
    before the refund (None: none); ``refunded``: what the transactions' counted refunds
    add up to so far.
    """
    state = dict(refunded)
    outcomes: list[RefundOutcome] = []
    for refund, sale in refunds:
        outcome = _decide(refund, sale, state.get(refund.sale, Refunded()))
        if outcome.decision is REFUND_COUNTED:
            before = state.get(refund.sale, Refunded())
            state[refund.sale] = before.plus(refund.refund_id, refund.event_id, outcome.amount)
        outcomes.append(outcome)
    return outcomes, {key: state[key] for key in state if state[key] is not refunded.get(key)}


def _decide(refund: RefundCall, sale: SaleFacts | None, before: Refunded) -> RefundOutcome:
    if refund.status == "rejected":
        return RefundOutcome(Decision("rejected", refund.reason))
    winner = before.ids.get(refund.refund_id)
    if winner is not None:
        return RefundOutcome(
            REFUND_REDELIVERED if winner == refund.event_id else REFUND_ALREADY_COUNTED
        )
    if sale is None:
        return RefundOutcome(Decision("rejected", Reason.SALE_UNKNOWN))
    if refund.currency and refund.currency != sale.currency:
        return RefundOutcome(Decision("rejected", Reason.CURRENCY_MISMATCH))
    remaining = sale.amount - before.amount
    amount = Decimal(refund.amount) if refund.amount else remaining
    if amount > remaining or amount <= ZERO:
        # Without an amount: nothing left to refund.
        return RefundOutcome(Decision("rejected", Reason.REFUND_ABOVE_REMAINING))
    return RefundOutcome(REFUND_COUNTED, amount, sale, full=amount == remaining)
