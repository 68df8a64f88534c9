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
from urllib.parse import urlencode

from schemas.events import Click, SaleCall
from schemas.raw import ClickRequest, SaleRequest
from schemas.rules import cookie_name
from schemas.signing import ClickToken, Link, link_url, make_token

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
        amount = f"{rng.randrange(1, 100000)}.{rng.randrange(100):02d}"
        calls.append(
            SaleCall(
                event_id=f"e{i}", received_at_ms=at, source="pixel", status="accepted", reason="",
                universe=universe, transaction_id=f"t{i}", amount=amount,
                amount_raw=amount, currency="EUR", customer_id=customer if not context else "",
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


# -- what an edge publishes for these events (schema version 2) --------------------------------

LANDING = "https://shop.example/landing?from=mail&q=caf%C3%A9"


def as_raw(call: SaleCall, secret: str) -> SaleRequest:
    """The raw request an edge received for ``call``: what the projector must read back as it.

    Pixel: the parameters as a percent-encoded query, and the carried click context as the
    signed cookie of the call's universe. API: the fields, the context as the click id. Only
    calls an edge could publish have one (their context verified when they arrived: see
    :func:`as_published`).
    """
    token = ""
    if call.clicked_at_ms:
        token = make_token(
            secret,
            ClickToken(call.universe, call.click_customer_id, call.campaign_id, call.link_id,
                       call.product, call.clicked_at_ms, call.click_id),
        )  # fmt: skip
    values = {
        "universe": call.universe, "amount": call.amount_raw, "id": call.transaction_id,
        "customer": call.customer_id, "currency": call.currency,
    }  # fmt: skip
    fields = {name: value for name, value in values.items() if value}
    if call.source == "api":
        return SaleRequest(
            event_id=call.event_id, received_at_ms=call.received_at_ms, source="api",
            fields={**fields, "click": token} if token else fields, client_hash=call.client_hash,
        )  # fmt: skip
    cookies = f"trk_other=x; {cookie_name(call.universe)}={token}" if token else ""
    # urlencode escapes what needs it (",", " ", non-ASCII): the projector parses it back.
    return SaleRequest(
        event_id=call.event_id, received_at_ms=call.received_at_ms, source="pixel",
        query=urlencode(fields), cookies=cookies, client_hash=call.client_hash,
    )  # fmt: skip


def click_as_raw(click: Click, secret: str) -> ClickRequest:
    """The raw click an edge received for ``click``: the signed link's query as followed."""
    link = Link(click.universe, click.customer_id, click.campaign_id, click.link_id, LANDING,
                click.product)  # fmt: skip
    _, _, query = link_url("https://t.example", secret, link).partition("?")
    return ClickRequest(
        event_id=click.event_id, clicked_at_ms=click.clicked_at_ms, query=query,
        client_hash=click.client_hash,
    )  # fmt: skip
