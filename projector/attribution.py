"""Last-click attribution. Pure.

A sale belongs to the most recent click of its customer, in its universe, at or before the
sale and within the attribution window. The click comes from the context the sale carries
(signed cookie or click id, verified by the edge) or, when that is absent or does not
qualify, from the customer's clicks the projector has stored. Ties on time break on the
click's event id, so the same log always gives the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from schemas.events import ClickContext, SaleCall

DAY_MS: Final = 86_400_000


class Attribution(msgspec.Struct, frozen=True):
    # A Struct, like the events: built once per event, ten times cheaper than a frozen dataclass.
    customer_id: str
    campaign_id: str = ""
    link_id: str = ""
    product: str = ""
    clicked_at_ms: int = 0  # 0: unattributed


def customer_of(call: SaleCall) -> str:
    """The merchant's customer id when given, else the one of the click the sale carries."""
    return call.customer_id or call.click_customer_id


def qualifies(click: ClickContext, universe: str, sold_at_ms: int, window_ms: int) -> bool:
    return (
        click.universe == universe
        and click.clicked_at_ms <= sold_at_ms
        and sold_at_ms - click.clicked_at_ms <= window_ms
    )


def qualifying_carried(call: SaleCall, window_ms: int) -> ClickContext | None:
    """The click the sale carries, if it may attribute it; else stored clicks are needed."""
    carried = call.carried_click()
    if carried is not None and qualifies(carried, call.universe, call.received_at_ms, window_ms):
        return carried
    return None


def attribute(call: SaleCall, known_clicks: Iterable[ClickContext], window_ms: int) -> Attribution:
    """Attribute one sale; ``known_clicks`` are the stored clicks of its customer."""
    customer = customer_of(call)
    sold_at = call.received_at_ms
    best = qualifying_carried(call, window_ms)
    if best is None:
        candidates = [
            click
            for click in known_clicks
            if customer
            and click.customer_id == customer
            and qualifies(click, call.universe, sold_at, window_ms)
        ]
        best = max(candidates, key=lambda c: (c.clicked_at_ms, c.click_id), default=None)
    if best is None:
        return Attribution(customer_id=customer)
    return Attribution(
        customer_id=customer,
        campaign_id=best.campaign_id,
        link_id=best.link_id,
        product=best.product,
        clicked_at_ms=best.clicked_at_ms,
    )
