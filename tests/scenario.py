"""The tests' scenarios: the event builders and generator of bench/workload.py and the oracle
of bench/oracle.py (one implementation, shared with the benchmark), and the same totals read
back from ClickHouse's public views to compare with the oracle's."""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.asyncclient import AsyncClient

from bench.oracle import Expected, oracle
from bench.workload import (
    DAY_MS,
    LANDING,
    T0,
    as_published,
    as_raw,
    click,
    click_as_raw,
    refund,
    refund_as_raw,
    sale,
    with_refunds,
)
from bench.workload import mixed as generate


async def actual(ch: AsyncClient, db: str) -> Expected:
    """The same shape, read from the public views with plain SELECTs."""
    out = Expected()

    async def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in (await ch.query(sql)).result_rows]

    out.sales = (await rows(f"SELECT count() FROM {db}.sales"))[0][0]
    for status, n in await rows(f"SELECT status, count() FROM {db}.sales_calls GROUP BY status"):
        out.calls[status] = n
    for status, n in await rows(f"SELECT status, count() FROM {db}.refunds_calls GROUP BY status"):
        out.refund_calls[status] = n
    totals = (
        "currency, purchases, turnover, gross_purchases, gross_turnover, refunds, refunded_turnover"
    )
    keyed = {
        "campaign": "universe, campaign_id",
        "customer": "universe, customer_id",
        "link": "universe, campaign_id, link_id",
        "daily": "universe, campaign_id, toString(day)",
    }
    views = {
        "campaign": "campaign_turnover",
        "customer": "customer_turnover",
        "link": "link_turnover",
        "daily": "campaign_turnover_daily",
    }
    for name, keys in keyed.items():
        table = getattr(out, name)
        for *key, cur, p, t, gp, gt, n, rt in await rows(
            f"SELECT {keys}, {totals} FROM {db}.{views[name]}"
        ):
            k = (*key, cur)
            table[k] = [p, t]
            out.gross[name][k] = [gp, gt]
            if n:
                # Refunded purchases: what the gross count has that the net one has not.
                out.refunds[name][k] = [n, gp - p, rt]
    return out


def as_dict(e: Expected) -> dict[str, Any]:
    return {
        "sales": e.sales, "calls": dict(e.calls), "campaign": e.campaign,
        "customer": e.customer, "link": e.link, "daily": e.daily, "gross": dict(e.gross),
        "refunds": dict(e.refunds), "refund_calls": dict(e.refund_calls),
    }  # fmt: skip


__all__ = [
    "DAY_MS",
    "LANDING",
    "T0",
    "Expected",
    "actual",
    "as_dict",
    "as_published",
    "as_raw",
    "click",
    "click_as_raw",
    "generate",
    "oracle",
    "refund",
    "refund_as_raw",
    "sale",
    "with_refunds",
]
