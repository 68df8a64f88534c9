"""Event builders, a data generator and an independent oracle for expected totals.

The oracle re-derives every public table from the event list with plain loops, written
apart from the projector's code, so an exact match means the projector is right, not just
self-consistent.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.asyncclient import AsyncClient

from bench.workload import LANDING, as_raw, click_as_raw
from schemas.events import Click, SaleCall

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


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
    context: tuple[str, str, str, int] | None = None,
) -> SaleCall:
    """A sale call; ``context`` = (customer, campaign, link, clicked_at_ms) it carries."""
    ctx_customer, campaign, link, clicked_at = context or ("", "", "", 0)
    return SaleCall(
        event_id=event_id, received_at_ms=at, source=source, status=status,  # type: ignore[arg-type]
        reason=reason, universe=universe, transaction_id=transaction_id, amount=amount,
        amount_raw=amount if amount_raw is None else amount_raw, currency="", customer_id=customer_id,
        click_id=f"click-of-{event_id}" if context else "", campaign_id=campaign, link_id=link,
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


@dataclass
class Expected:
    sales: int = 0
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    campaign: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    customer: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    link: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    daily: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)


def _add(table: dict[Any, list[Any]], key: Any, amount: Decimal) -> None:
    entry = table.setdefault(key, [0, Decimal(0)])
    entry[0] += 1
    entry[1] += amount


def oracle(clicks: list[Click], calls: list[SaleCall], window_ms: int = 30 * DAY_MS) -> Expected:
    """Expected totals; ``calls`` in the order the log holds them per transaction."""
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
            best: Click | None = None
            for c in clicks:
                ok = (
                    c.universe == call.universe
                    and c.customer_id == customer
                    and c.clicked_at_ms <= call.received_at_ms
                    and call.received_at_ms - c.clicked_at_ms <= window_ms
                )
                if ok and (
                    best is None
                    or (c.clicked_at_ms, c.event_id) > (best.clicked_at_ms, best.event_id)
                ):
                    best = c
            if best is not None:
                campaign, link = best.campaign_id, best.link_id
        amount = Decimal(call.amount)
        day = datetime.fromtimestamp(call.received_at_ms / 1000, tz=UTC).date().isoformat()
        _add(out.campaign, (call.universe, campaign), amount)
        _add(out.link, (call.universe, campaign, link), amount)
        _add(out.daily, (call.universe, campaign, day), amount)
        if customer:
            _add(out.customer, (call.universe, customer), amount)
    return out


async def actual(ch: AsyncClient, db: str) -> Expected:
    """The same shape, read from the public views with plain SELECTs."""
    out = Expected()

    async def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in (await ch.query(sql)).result_rows]

    out.sales = (await rows(f"SELECT count() FROM {db}.sales"))[0][0]
    for status, n in await rows(f"SELECT status, count() FROM {db}.sales_calls GROUP BY status"):
        out.calls[status] = n
    for u, k, p, t in await rows(
        f"SELECT universe, campaign_id, purchases, turnover FROM {db}.campaign_turnover"
    ):
        out.campaign[(u, k)] = [p, t]
    for u, c, p, t in await rows(
        f"SELECT universe, customer_id, purchases, turnover FROM {db}.customer_turnover"
    ):
        out.customer[(u, c)] = [p, t]
    for u, k, link, p, t in await rows(
        f"SELECT universe, campaign_id, link_id, purchases, turnover FROM {db}.link_turnover"
    ):
        out.link[(u, k, link)] = [p, t]
    for u, k, d, p, t in await rows(
        f"SELECT universe, campaign_id, day, purchases, turnover FROM {db}.campaign_turnover_daily"
    ):
        out.daily[(u, k, d.isoformat())] = [p, t]
    return out


def as_dict(e: Expected) -> dict[str, Any]:
    return {
        "sales": e.sales, "calls": dict(e.calls), "campaign": e.campaign,
        "customer": e.customer, "link": e.link, "daily": e.daily,
    }  # fmt: skip


def generate(
    *, seed: int, sales: int, customers: int = 200, campaigns: int = 5, links: int = 3
) -> tuple[list[Click], list[SaleCall]]:
    """Clicks and calls over two universes: duplicates, refreshes, rejects, no-id sales,
    carried click contexts and customer-only sales. Calls of one transaction are in order."""
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
        call = sale(f"e{i}", tx, amount=amount, universe=u, customer_id=customer, at=at,
                    context=context, amount_raw=amount.replace(".", ",") if i % 2 else amount)  # fmt: skip
        calls.append(call)
        if tx and rng.random() < 0.12:  # a refreshed page, or the same sale from the API
            calls.append(
                sale(f"e{i}-dup", tx, amount=amount, universe=u, customer_id=customer,
                     at=at + 1000, source=rng.choice(("pixel", "api")))
            )  # fmt: skip
        if rng.random() < 0.03:
            calls.append(sale(f"e{i}-bad", f"bad{i}", amount="", amount_raw="12.3.4",
                              universe=u, status="rejected", reason="amount_malformed"))  # fmt: skip
    return clicks, calls


# -- the same events as the edge publishes them since schema version 2 ----------------------


def as_published(calls: list[SaleCall], window_ms: int = 30 * DAY_MS) -> list[SaleCall]:
    """``calls`` as an edge could have published them: a context it could not verify (clicked
    outside the window) was never attached. Written apart from the projector's code."""
    out = []
    for call in calls:
        age = call.received_at_ms - call.clicked_at_ms
        verified = not call.clicked_at_ms or -300_000 <= age <= window_ms
        out.append(
            call if verified else dataclasses.replace(
                call, click_id="", campaign_id="", link_id="", product="",
                click_customer_id="", clicked_at_ms=0,
            )
        )  # fmt: skip
    return out


__all__ = ["LANDING", "as_raw", "click_as_raw"]
