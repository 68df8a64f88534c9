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
    sale,
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
    totals = "currency, purchases, turnover"
    for u, k, cur, p, t in await rows(
        f"SELECT universe, campaign_id, {totals} FROM {db}.campaign_turnover"
    ):
        out.campaign[(u, k, cur)] = [p, t]
    for u, c, cur, p, t in await rows(
        f"SELECT universe, customer_id, {totals} FROM {db}.customer_turnover"
    ):
        out.customer[(u, c, cur)] = [p, t]
    for u, k, link, cur, p, t in await rows(
        f"SELECT universe, campaign_id, link_id, {totals} FROM {db}.link_turnover"
    ):
        out.link[(u, k, link, cur)] = [p, t]
    for u, k, d, cur, p, t in await rows(
        f"SELECT universe, campaign_id, day, {totals} FROM {db}.campaign_turnover_daily"
    ):
        out.daily[(u, k, d.isoformat(), cur)] = [p, t]
    return out


def as_dict(e: Expected) -> dict[str, Any]:
    return {
        "sales": e.sales, "calls": dict(e.calls), "campaign": e.campaign,
        "customer": e.customer, "link": e.link, "daily": e.daily,
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
    "sale",
]
