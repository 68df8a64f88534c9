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
