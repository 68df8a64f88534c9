"""Last-click attribution. Pure.

A sale belongs to the most recent click of its customer, in its universe, at or before the
sale and within the attribution window. The click comes from the context the sale carries
(signed cookie or click id, verified by the edge) or, when that is absent or does not
qualify, from the customer's clicks the projector has stored. Ties on time break on the
click's event id, so the same log always gives the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from schemas.events import SaleCall

DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class Touch:
    """One click that may attribute a sale."""

    universe: str
    customer_id: str
    campaign_id: str
    link_id: str
    product: str
    clicked_at_ms: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Attribution:
    customer_id: str
    campaign_id: str = ""
    link_id: str = ""
    product: str = ""
    clicked_at_ms: int = 0  # 0: unattributed


def customer_of(call: SaleCall) -> str:
    """The merchant's customer id when given, else the one of the click the sale carries."""
    return call.customer_id or call.click_customer_id


def qualifies(touch: Touch, universe: str, sold_at_ms: int, window_ms: int) -> bool:
    return (
        touch.universe == universe
        and touch.clicked_at_ms <= sold_at_ms
        and sold_at_ms - touch.clicked_at_ms <= window_ms
    )


def carried_touch(call: SaleCall) -> Touch | None:
    if call.clicked_at_ms <= 0 or not call.campaign_id:
        return None
    return Touch(
        universe=call.universe,
        customer_id=call.click_customer_id,
        campaign_id=call.campaign_id,
        link_id=call.link_id,
        product=call.product,
        clicked_at_ms=call.clicked_at_ms,
        event_id=call.click_id,
    )


def qualifying_carried(call: SaleCall, window_ms: int) -> Touch | None:
    """The click the sale carries, if it may attribute it; else stored clicks are needed."""
    carried = carried_touch(call)
    if carried is not None and qualifies(carried, call.universe, call.received_at_ms, window_ms):
        return carried
    return None


def attribute(call: SaleCall, known_clicks: Iterable[Touch], window_ms: int) -> Attribution:
    """Attribute one sale; ``known_clicks`` are the stored clicks of its customer."""
    customer = customer_of(call)
    sold_at = call.received_at_ms
    best = qualifying_carried(call, window_ms)
    if best is None:
        candidates = [
            touch
            for touch in known_clicks
            if customer
            and touch.customer_id == customer
            and qualifies(touch, call.universe, sold_at, window_ms)
        ]
        best = max(candidates, key=lambda t: (t.clicked_at_ms, t.event_id), default=None)
    if best is None:
        return Attribution(customer_id=customer)
    return Attribution(
        customer_id=customer,
        campaign_id=best.campaign_id,
        link_id=best.link_id,
        product=best.product,
        clicked_at_ms=best.clicked_at_ms,
    )
