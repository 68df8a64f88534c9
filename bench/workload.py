"""Generated logs, for the benchmark and the tests, and the raw requests an edge publishes
for them. Their exact expected totals are bench/oracle.py's.

Two deterministic generators: :func:`generate`, the projector benchmark's large log, and
:func:`mixed`, the tests' smaller one with every kind of call.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from urllib.parse import urlencode

import msgspec

from schemas.amount import canonical
from schemas.events import Click, ClickContext, SaleCall
from schemas.raw import ClickRequest, RefundRequest, SaleRequest
from schemas.refunds import RefundCall
from schemas.rules import cookie_name
from schemas.signing import Link, link_url, make_v1_token

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW_MS = 30 * DAY_MS
# What generated sales are paid in, by turns: '' is a call that named no currency.
CURRENCIES = ("EUR", "USD", "")


# -- events ----------------------------------------------------------------------------------


def sale(
    event_id: str,
    transaction_id: str,
    *,
    amount: str = "10.00",
    amount_raw: str | None = None,
    universe: str = "demo",
    customer_id: str = "",
    at: int = T0,
    source: str = "pixel",
    status: str = "accepted",
    reason: str = "",
    currency: str = "",
    context: tuple[str, str, str, int] | None = None,
    click_id: str | None = None,
) -> SaleCall:
    """A sale call; ``context`` = (customer, campaign, link, clicked_at_ms) it carries."""
    ctx_customer, campaign, link, clicked_at = context or ("", "", "", 0)
    if context and click_id is None:
        click_id = f"click-of-{event_id}"
    return SaleCall(
        event_id=event_id, received_at_ms=at, source=source, status=status,  # type: ignore[arg-type]
        reason=reason, universe=universe, transaction_id=transaction_id, amount=amount,
        amount_raw=amount if amount_raw is None else amount_raw, currency=currency,
        customer_id=customer_id, click_id=click_id or "", campaign_id=campaign, link_id=link,
        product="main" if context else "", click_customer_id=ctx_customer, clicked_at_ms=clicked_at,
    )  # fmt: skip


def click(
    event_id: str, customer_id: str, campaign_id: str, link_id: str, *, at: int,
    universe: str = "demo", product: str = "main",
) -> Click:  # fmt: skip
    return Click(
        event_id=event_id, clicked_at_ms=at, universe=universe, customer_id=customer_id,
        campaign_id=campaign_id, link_id=link_id, product=product,
    )  # fmt: skip


# -- the benchmark's log ---------------------------------------------------------------------

UNIVERSES = ("bench_a", "bench_b")


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
    """About 20% clicks and 80% sales calls, of which 10% repeat an earlier transaction; two
    universes. A third of the sales carry a click context, a third name only a customer
    (attributed from stored clicks), a third are anonymous. Currencies take turns."""
    rng = random.Random(seed)
    per_campaign = max(1, links // campaigns)
    n_clicks = events // 5
    clicks = []
    for i in range(n_clicks):
        k = rng.randrange(campaigns)
        at = T0 + rng.randrange(20 * DAY_MS)
        customer = f"u{rng.randrange(customers)}"
        link = f"k{k}-l{rng.randrange(per_campaign)}"
        clicks.append(click(f"c{i}", customer, f"k{k}", link, at=at, universe=UNIVERSES[i % 2]))
    calls: list[SaleCall] = []
    n_sales = events - n_clicks
    while len(calls) < n_sales:
        i = len(calls)
        if calls and rng.random() < 0.10:
            first = calls[rng.randrange(max(0, i - 1000), i)]
            if first.transaction_id:
                calls.append(_repeat(first, f"e{i}"))
                continue
        universe = UNIVERSES[i % 2]
        at = T0 + 15 * DAY_MS + rng.randrange(30 * DAY_MS)
        kind = rng.randrange(3)
        customer = f"u{rng.randrange(customers)}" if kind < 2 else ""
        k = rng.randrange(campaigns)
        amount = f"{rng.randrange(1, 100000)}.{rng.randrange(100):02d}"
        context = None
        if kind == 0:
            link = f"k{k}-l{rng.randrange(per_campaign)}"
            context = (customer, f"k{k}", link, at - rng.randrange(DAY_MS))
        calls.append(
            sale(f"e{i}", f"t{i}", amount=amount, universe=universe, at=at,
                 currency=CURRENCIES[i % len(CURRENCIES)],
                 customer_id="" if context else customer, context=context,
                 click_id=f"ctx{i}" if context else None)
        )  # fmt: skip
    return Workload(clicks, calls)


def _repeat(call: SaleCall, event_id: str) -> SaleCall:
    return msgspec.structs.replace(
        call, event_id=event_id, received_at_ms=call.received_at_ms + 1000
    )


# -- the tests' log ----------------------------------------------------------------------------


def mixed(
    *, seed: int, sales: int, customers: int = 200, campaigns: int = 5, links: int = 3,
    currencies: tuple[str, ...] = CURRENCIES,
) -> tuple[list[Click], list[SaleCall]]:  # fmt: skip
    """Clicks and calls over two universes: duplicates, refreshes, rejects, no-id sales,
    carried click contexts and customer-only sales. Calls of one transaction are in order.

    Sales take ``currencies`` by turns, so a customer or campaign pays in several. The turns
    draw nothing from the seeded generator: with ``currencies=("",)`` a seed gives the very
    log it gave before currencies (tests/fixtures/make_v1_log.py relies on it)."""
    rng = random.Random(seed)
    universes = ("shop_a", "shop_b")
    clicks: list[Click] = []
    for i in range(customers * 2):
        u = rng.choice(universes)
        k = f"k{rng.randrange(campaigns)}"
        clicks.append(
            click(f"c{i}", f"cust{rng.randrange(customers)}", k, f"{k}-l{rng.randrange(links)}",
                  at=T0 + rng.randrange(20 * DAY_MS), universe=u)
        )  # fmt: skip
    calls: list[SaleCall] = []
    for i in range(sales):
        u = rng.choice(universes)
        at = T0 + 15 * DAY_MS + rng.randrange(30 * DAY_MS)
        amount = f"{rng.randrange(1, 50_000)}.{rng.randrange(100):02d}"
        kind = rng.random()
        tx = "" if kind < 0.05 else f"tx{i}"
        customer = f"cust{rng.randrange(customers)}" if kind < 0.7 else ""
        context = None
        if 0.7 <= kind < 0.85:
            k = f"k{rng.randrange(campaigns)}"
            context = (f"cust{rng.randrange(customers)}", k, f"{k}-l{rng.randrange(links)}",
                       at - rng.randrange(40 * DAY_MS))  # fmt: skip
        currency = currencies[i % len(currencies)]
        call = sale(f"e{i}", tx, amount=amount, universe=u, customer_id=customer, at=at,
                    context=context, amount_raw=amount.replace(".", ",") if i % 2 else amount,
                    currency=currency)  # fmt: skip
        calls.append(call)
        if tx and rng.random() < 0.12:  # a refreshed page, or the same sale from the API
            calls.append(
                sale(f"e{i}-dup", tx, amount=amount, universe=u, customer_id=customer,
                     at=at + 1000, source=rng.choice(("pixel", "api")), currency=currency)
            )  # fmt: skip
        if rng.random() < 0.03:
            calls.append(sale(f"e{i}-bad", f"bad{i}", amount="", amount_raw="12.3.4",
                              universe=u, status="rejected", reason="amount_malformed"))  # fmt: skip
    return clicks, calls


# -- what an edge publishes for these events (schema version 2) --------------------------------

LANDING = "https://shop.example/landing?from=mail&q=caf%C3%A9"


def as_published(calls: list[SaleCall], window_ms: int = WINDOW_MS) -> list[SaleCall]:
    """``calls`` as an edge could have published them: a context it could not verify (clicked
    outside the window) was never attached. Written apart from the projector's code."""
    out = []
    for call in calls:
        age = call.received_at_ms - call.clicked_at_ms
        verified = not call.clicked_at_ms or -300_000 <= age <= window_ms
        out.append(
            call if verified else msgspec.structs.replace(
                call, click_id="", campaign_id="", link_id="", product="",
                click_customer_id="", clicked_at_ms=0,
            )
        )  # fmt: skip
    return out


def as_raw(call: SaleCall, secret: str) -> SaleRequest:
    """The raw request an edge received for ``call``: what the projector must read back as it.

    Pixel: the parameters as a percent-encoded query, and the carried click context as the
    signed cookie of the call's universe. API: the fields, the context as the click id. Only
    calls an edge could publish have one (their context verified when they arrived: see
    :func:`as_published`).
    """
    token = ""
    if call.clicked_at_ms:
        token = make_v1_token(
            secret,
            ClickContext(call.universe, call.click_customer_id, call.campaign_id, call.link_id,
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


# -- refunds ---------------------------------------------------------------------------------


def refund(
    event_id: str,
    transaction_id: str,
    refund_id: str,
    *,
    amount: str = "",
    universe: str = "demo",
    at: int = T0,
    currency: str = "",
    status: str = "accepted",
    reason: str = "",
) -> RefundCall:
    """A refund call (``amount`` "": the whole remaining amount)."""
    return RefundCall(
        event_id=event_id, received_at_ms=at, status=status,  # type: ignore[arg-type]
        reason=reason, universe=universe, transaction_id=transaction_id, refund_id=refund_id,
        amount=amount, amount_raw=amount, currency=currency,
    )  # fmt: skip


def with_refunds(calls: list[SaleCall], *, seed: int) -> list[SaleCall | RefundCall]:
    """``calls`` with refunds among them, each after its sale unless said otherwise: partial
    ones, full ones (with and without an amount), a refund id sent twice, one above what is
    left, one before its sale (and the same refund again after it), one of an unknown
    transaction, one in another currency, one without a refund id. A refund comes 2 days
    after its sale, so the daily rollups see it on another day. Draws from its own generator:
    ``calls`` stay what their seed made them."""
    rng = random.Random(seed)
    out: list[SaleCall | RefundCall] = []
    day = 2 * DAY_MS
    for i, call in enumerate(calls):
        tx, u, later = call.transaction_id, call.universe, call.received_at_ms + day
        kind = rng.random() if tx and call.status == "accepted" else 1.0
        if 0.30 <= kind < 0.33:  # before its sale: rejected, and its refund id not burnt
            out.append(refund(f"r{i}-early", tx, f"rf{i}", universe=u, at=call.received_at_ms))
        out.append(call)
        amount = Decimal(call.amount or "0")
        if amount < 1:
            continue
        third = canonical((amount / 3).quantize(Decimal("0.0001"), rounding=ROUND_DOWN))
        if kind < 0.10:  # partial, then the rest without an amount (a full refund)
            out.append(refund(f"r{i}-a", tx, f"rf{i}-a", amount=third, universe=u, at=later))
            out.append(refund(f"r{i}-b", tx, f"rf{i}-b", universe=u, at=later + 1000))
        elif kind < 0.18:  # partial only, its refund id sent twice
            out.append(refund(f"r{i}-a", tx, f"rf{i}", amount=third, universe=u, at=later))
            out.append(refund(f"r{i}-b", tx, f"rf{i}", amount=third, universe=u, at=later))
        elif kind < 0.22:  # the whole amount named, then more than is left
            out.append(refund(f"r{i}-a", tx, f"rf{i}-a", amount=call.amount, universe=u,
                              at=later, currency=call.currency))  # fmt: skip
            out.append(refund(f"r{i}-b", tx, f"rf{i}-b", amount="1", universe=u, at=later))
        elif kind < 0.25:  # more than the sale
            out.append(
                refund(f"r{i}-a", tx, f"rf{i}", amount=canonical(amount + 1), universe=u, at=later)
            )
        elif kind < 0.27 and call.currency:  # another currency
            other = "JPY" if call.currency != "JPY" else "CHF"
            out.append(refund(f"r{i}-a", tx, f"rf{i}", currency=other, universe=u, at=later))
        elif kind < 0.29:  # of a transaction that was never sold
            out.append(refund(f"r{i}-a", f"never-{tx}", f"rf{i}", universe=u, at=later))
        elif kind < 0.30:  # no refund id: rejected by the rules
            out.append(refund(f"r{i}-a", tx, "", universe=u, at=later, status="rejected",
                              reason="refund_id_invalid"))  # fmt: skip
        elif kind < 0.33:  # the early one, sent again after the sale: counted now
            out.append(refund(f"r{i}-late", tx, f"rf{i}", amount=third, universe=u, at=later))
    return out


def refund_as_raw(r: RefundCall) -> RefundRequest:
    """The raw refund an edge received for ``r``."""
    values = {
        "universe": r.universe, "id": r.transaction_id, "refund_id": r.refund_id,
        "amount": r.amount_raw, "currency": r.currency,
    }  # fmt: skip
    return RefundRequest(
        event_id=r.event_id, received_at_ms=r.received_at_ms,
        fields={name: value for name, value in values.items() if value},
    )  # fmt: skip
