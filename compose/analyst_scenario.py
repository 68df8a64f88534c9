"""The analysts' known scenario: a small story whose every chart and recipe result is worked
out by hand in docs/analysts.md and tests/compose/test_dashboard.py.

It is sent as real traffic through a running edge with compose/demo.py's helpers (tracked
links followed, the pixel with the click cookie or the `click` parameter, the API), in the
universe ``demo``. Six customers click, five buy, two anonymous visitors buy, a refreshed
page sends one order twice and five calls are rejected; amounts in EUR and USD. Then five
refunds by the API: two count (all of an anonymous 15 EUR, 10 of dave's 25 USD), one is sent
twice, one names an unknown order, one asks more than is left.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from compose.demo import UNIVERSE, Target, Visit, api_refund, api_sale, follow, pixel, wait_until


@dataclass(frozen=True)
class Click:
    customer: str
    campaign: str
    link: str
    product: str


@dataclass(frozen=True)
class Call:
    """A sale call: by the pixel (``via`` "cookie" or "click": the customer's click context
    travels with it, as the cookie or the click id; "" for none) or by the API ("api")."""

    query: str  # the pixel's parameters, or the API sale's fields, as a query string
    via: str = ""
    customer: str = ""


CLICKS = (
    Click("alice", "spring", "hero", "newsletter"),
    Click("bob", "spring", "footer", "newsletter"),
    Click("carol", "summer", "hero", "catalog"),
    Click("dave", "summer", "banner", "catalog"),
    Click("erin", "spring", "hero", "app"),
    Click("grace", "summer", "banner", "catalog"),  # clicks, never buys
)

CALLS = (
    Call("currency=EUR&amount=120.00&id=o-1", "cookie", "alice"),
    Call("currency=EUR&amount=120.00&id=o-1", "cookie", "alice"),  # page refreshed: duplicate
    Call("currency=EUR&amount=80.50&id=o-2", "cookie", "alice"),
    Call("currency=EUR&amount=1500&id=o-3", "click", "bob"),
    # No click context: attributed from the clicks ClickHouse holds for carol.
    Call("currency=EUR&amount=40&id=o-4&customer=carol", "api"),
    Call("currency=USD&amount=25&id=o-5", "cookie", "dave"),
    Call("currency=USD&amount=25&id=o-6", "cookie", "dave"),
    Call("currency=EUR&amount=300&id=o-7", "cookie", "erin"),
    Call("currency=USD&amount=9.99&id=o-8"),  # anonymous: unattributed
    Call("currency=EUR&amount=15&id=o-9"),  # anonymous: unattributed
    Call("currency=EUR&amount=60&id=o-10&customer=frank", "api"),  # known, never clicked
    Call("currency=EUR&amount=1.000,00&id=r-1"),  # amount_malformed
    Call("currency=EUR&amount=-5&id=r-2"),  # amount_malformed
    Call("currency=EUR&id=r-3"),  # amount_missing
    Call("currency=EURO&amount=10&id=r-4"),  # currency_invalid
    Call("currency=EUR&amount=2000000000&id=r-5"),  # amount_too_large
)
# What the views hold once every call is written (the load waits for exactly this).
COUNTED = 10
WITH_CUSTOMER = 8

# Refunds, sent once every sale is counted (a refund read before its sale is rejected).
REFUNDS = (
    {"id": "o-9", "refund_id": "rf-1"},  # all of the anonymous 15 EUR: one purchase less
    {"id": "o-9", "refund_id": "rf-1"},  # sent again: duplicate
    {"id": "o-6", "refund_id": "rf-2", "amount": "10", "currency": "USD"},  # part of dave's 25
    {"id": "o-99", "refund_id": "rf-3", "amount": "5"},  # no such sale: sale_unknown
    {"id": "o-6", "refund_id": "rf-4", "amount": "100"},  # refund_above_remaining
)
REFUNDS_COUNTED = 2


def send(target: Target, call: Call, visits: dict[str, Visit]) -> None:
    if call.via == "api":
        api_sale(target, dict(urllib.parse.parse_qsl(call.query)))
        return
    query = f"universe={UNIVERSE}&{call.query}"
    visit = visits.get(call.customer)
    if call.via == "cookie" and visit:
        pixel(target, query, cookie=visit.cookie)
    elif call.via == "click" and visit:
        pixel(target, f"{query}&click={urllib.parse.quote(visit.click)}")
    else:
        pixel(target, query)


def load(target: Target, *, timeout: float = 60.0) -> None:
    """Send the scenario through the edge and wait until every view shows all of it.

    Meant for an empty universe ``demo`` (a test's own database, a fresh stack): the wait
    compares exact counts.
    """
    visits = {c.customer: follow(target, c.customer, c.campaign, c.link, c.product) for c in CLICKS}
    demo = f"universe = '{UNIVERSE}'"
    calls = len(CALLS)
    # The clicks stored before the sales: the API sales are attributed from them.
    wait_until(
        target, f"SELECT count() FROM tracker.clicks WHERE {demo}",  # noqa: S608
        str(len(CLICKS)), "the scenario's clicks", timeout,
    )  # fmt: skip
    for call in CALLS:
        send(target, call, visits)
    wait_until(
        target,
        f"SELECT (SELECT count() FROM tracker.sales_calls WHERE {demo}) = {calls}"  # noqa: S608
        f" AND (SELECT count() FROM tracker.sales WHERE {demo}) = {COUNTED}"
        f" AND (SELECT sum(purchases) FROM tracker.campaign_turnover WHERE {demo}) = {COUNTED}"
        f" AND (SELECT sum(purchases) FROM tracker.link_turnover WHERE {demo}) = {COUNTED}"
        f" AND (SELECT sum(purchases) FROM tracker.campaign_turnover_daily WHERE {demo})"
        f"     = {COUNTED}"
        f" AND (SELECT sum(purchases) FROM tracker.customer_turnover WHERE {demo})"
        f"     = {WITH_CUSTOMER}",
        "1", "the scenario's calls", timeout,
    )  # fmt: skip
    for refund in REFUNDS:
        api_refund(target, refund)
    wait_until(
        target,
        f"SELECT (SELECT count() FROM tracker.refunds_calls WHERE {demo}) = {len(REFUNDS)}"  # noqa: S608
        f" AND (SELECT count() FROM tracker.refunds WHERE {demo}) = {REFUNDS_COUNTED}"
        f" AND (SELECT sum(refunds) FROM tracker.campaign_turnover WHERE {demo})"
        f"     = {REFUNDS_COUNTED}"
        f" AND (SELECT sum(refunds) FROM tracker.link_turnover WHERE {demo}) = {REFUNDS_COUNTED}"
        f" AND (SELECT sum(refunds) FROM tracker.campaign_turnover_daily WHERE {demo})"
        f"     = {REFUNDS_COUNTED}",
        "1", "the scenario's refunds", timeout,
    )  # fmt: skip
