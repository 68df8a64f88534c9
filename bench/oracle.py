"""The expected totals of a log: every public table re-derived from the events with plain
loops, written apart from the projector's code, so an exact match means the projector is
right, not just self-consistent. The benchmark and the tests compare with it. Every total is
per currency (the call's, '' when it named none): amounts of two currencies never add up."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.workload import WINDOW_MS
from schemas.events import Click, SaleCall


@dataclass
class Expected:
    sales: int = 0
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Keys end with the currency: (universe, campaign, currency), (universe, customer,
    # currency), (universe, campaign, link, currency), (universe, campaign, day, currency).
    campaign: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    customer: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    link: dict[tuple[str, str, str, str], list[Any]] = field(default_factory=dict)
    daily: dict[tuple[str, str, str, str], list[Any]] = field(default_factory=dict)

    @property
    def turnover(self) -> Decimal:
        """The sum of every amount whatever its currency: a checksum, not a turnover."""
        return sum((turnover for _, turnover in self.campaign.values()), Decimal(0))


def _add(table: dict[Any, list[Any]], key: Any, amount: Decimal) -> None:
    entry = table.setdefault(key, [0, Decimal(0)])
    entry[0] += 1
    entry[1] += amount


def oracle(clicks: list[Click], calls: list[SaleCall], window_ms: int = WINDOW_MS) -> Expected:
    """Expected totals; ``calls`` in the order the log holds them per transaction.

    The first accepted call of a transaction counts; a carried click context inside the
    window attributes it, else the customer's last click inside the window (latest
    ``clicked_at_ms``, then highest event id).
    """
    touches: dict[tuple[str, str], list[tuple[int, str, str, str]]] = {}
    for c in clicks:
        touches.setdefault((c.universe, c.customer_id), []).append(
            (c.clicked_at_ms, c.event_id, c.campaign_id, c.link_id)
        )
    for listed in touches.values():
        listed.sort()
    out = Expected()
    counted: set[tuple[str, str]] = set()
    for call in calls:
        if call.status == "rejected":
            out.calls["rejected"] += 1
            continue
        key = (call.universe, call.transaction_id or "#" + call.event_id)
        if key in counted:
            out.calls["duplicate"] += 1
            continue
        counted.add(key)
        out.calls["counted"] += 1
        out.sales += 1
        customer = call.customer_id or call.click_customer_id
        campaign = link = ""
        carried_ok = (
            call.clicked_at_ms > 0
            and call.clicked_at_ms <= call.received_at_ms
            and call.received_at_ms - call.clicked_at_ms <= window_ms
        )
        if carried_ok:
            campaign, link = call.campaign_id, call.link_id
        elif customer:
            listed = touches.get((call.universe, customer), [])
            # The last click at or before the call (event ids are ASCII: below U+FFFF).
            i = bisect.bisect_right(listed, (call.received_at_ms, "\uffff", "", ""))
            if i and call.received_at_ms - listed[i - 1][0] <= window_ms:
                _, _, campaign, link = listed[i - 1]
        amount = Decimal(call.amount)
        day = datetime.fromtimestamp(call.received_at_ms / 1000, tz=UTC).date().isoformat()
        currency = call.currency
        _add(out.campaign, (call.universe, campaign, currency), amount)
        _add(out.link, (call.universe, campaign, link, currency), amount)
        _add(out.daily, (call.universe, campaign, day, currency), amount)
        if customer:
            _add(out.customer, (call.universe, customer, currency), amount)
    return out
