"""The projector benchmark's log: a deterministic generator and its exact expected totals.

About 20% clicks and 80% sales calls, of which 10% repeat an earlier transaction; customers,
campaigns and links as asked; two universes. A third of the sales carry a click context, a
third name only a customer (attributed from stored clicks), a third are anonymous. The
expected totals are computed here, independently of the projector.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from schemas.events import Click, SaleCall

DAY_MS = 86_400_000
T0 = 1_767_225_600_000
WINDOW_MS = 30 * DAY_MS
UNIVERSES = ("bench_a", "bench_b")


@dataclass
class Totals:
    calls: int = 0
    counted: int = 0
    turnover: Decimal = Decimal(0)
    campaign: dict[tuple[str, str], list[object]] = field(default_factory=dict)
    customers: int = 0


@dataclass
class Workload:
    clicks: list[Click]
    calls: list[SaleCall]

    def events(self) -> Iterator[Click | SaleCall]:
        yield from self.clicks
        yield from self.calls


def generate(
    events: int, *, customers: int, campaigns: int = 50, links: int = 500, seed: int = 1
) -> Workload:
    rng = random.Random(seed)
    per_campaign = max(1, links // campaigns)
    n_clicks = events // 5
    clicks = []
    for i in range(n_clicks):
        k = rng.randrange(campaigns)
        clicks.append(
            Click(
                event_id=f"c{i}", clicked_at_ms=T0 + rng.randrange(20 * DAY_MS),
                universe=UNIVERSES[i % 2], customer_id=f"u{rng.randrange(customers)}",
                campaign_id=f"k{k}", link_id=f"k{k}-l{rng.randrange(per_campaign)}", product="main",
            )
        )  # fmt: skip
    calls: list[SaleCall] = []
    n_sales = events - n_clicks
    while len(calls) < n_sales:
        i = len(calls)
        if calls and rng.random() < 0.10:
            first = calls[rng.randrange(max(0, i - 1000), i)]
            if first.transaction_id:
                calls.append(_copy(first, f"e{i}"))
                continue
        universe = UNIVERSES[i % 2]
        at = T0 + 15 * DAY_MS + rng.randrange(30 * DAY_MS)
        kind = rng.randrange(3)
        customer = f"u{rng.randrange(customers)}" if kind < 2 else ""
        k = rng.randrange(campaigns)
        context = kind == 0
        calls.append(
            SaleCall(
                event_id=f"e{i}", received_at_ms=at, source="pixel", status="accepted", reason="",
                universe=universe, transaction_id=f"t{i}", amount=f"{rng.randrange(1, 100000)}.{rng.randrange(100):02d}",
                amount_raw="", currency="EUR", customer_id=customer if not context else "",
                click_id=f"ctx{i}" if context else "", campaign_id=f"k{k}" if context else "",
                link_id=f"k{k}-l{rng.randrange(per_campaign)}" if context else "",
                product="main" if context else "", click_customer_id=customer if context else "",
                clicked_at_ms=at - rng.randrange(DAY_MS) if context else 0,
            )
        )  # fmt: skip
    return Workload(clicks, calls)


def _copy(call: SaleCall, event_id: str) -> SaleCall:
    from dataclasses import replace

    return replace(call, event_id=event_id, received_at_ms=call.received_at_ms + 1000)


def expected(workload: Workload) -> Totals:
    """Exact totals, with the projector's rules: first call wins, last qualifying click."""
    by_customer: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
    for c in workload.clicks:
        by_customer.setdefault((c.universe, c.customer_id), []).append(
            (c.clicked_at_ms, c.event_id, c.campaign_id)
        )
    for touches in by_customer.values():
        touches.sort()
    totals = Totals(calls=len(workload.calls))
    seen: set[tuple[str, str]] = set()
    customers: set[tuple[str, str]] = set()
    for call in workload.calls:
        key = (call.universe, call.transaction_id)
        if key in seen:
            continue
        seen.add(key)
        totals.counted += 1
        amount = Decimal(call.amount)
        totals.turnover += amount
        campaign = ""
        if call.clicked_at_ms:
            campaign = call.campaign_id
        elif call.customer_id:
            touches = by_customer.get((call.universe, call.customer_id), [])
            i = bisect.bisect_right(touches, (call.received_at_ms, "\uffff", ""))
            if i and call.received_at_ms - touches[i - 1][0] <= WINDOW_MS:
                campaign = touches[i - 1][2]
        customer = call.customer_id or call.click_customer_id
        if customer:
            customers.add((call.universe, customer))
        entry = totals.campaign.setdefault((call.universe, campaign), [0, Decimal(0)])
        entry[0] = int(str(entry[0])) + 1
        entry[1] = Decimal(str(entry[1])) + amount
    totals.customers = len(customers)
    return totals
