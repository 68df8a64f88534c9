"""What ClickHouse holds for one universe, against what the edge answered."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from chaos.load import Answered
from chaos.stack import LocalStack


@dataclass(frozen=True)
class Tally:
    answered: int
    counted: int  # answered calls counted exactly once
    lost: int  # answered, never counted
    doubled: int  # counted more than once
    unanswered_counted: int  # counted though the caller saw no answer (in flight at a crash)
    copies: int  # extra ledger rows of the same event (at-least-once re-sends), not counted
    extra_calls: int  # answered calls with more than one distinct event in sales_calls
    exact: bool  # every public rollup equals the sum of the counted calls' amounts


def tally(stack: LocalStack, universe: str, answered: Answered) -> Tally:
    rows = stack.query(
        "SELECT transaction_id, countIf(status = 'counted'), uniqExact(event_id), count(), "
        "sumIf(amount, status = 'counted') FROM tracker.sales_calls "
        f"WHERE universe = '{universe}' GROUP BY transaction_id FORMAT TabSeparated"
    )
    counted_once = doubled = unanswered = copies = extra = 0
    expected_sum = Decimal(0)
    counted_txs = set()
    for tx, counted, events, calls, amount in rows:
        if int(counted):
            counted_txs.add(tx)
        copies += int(calls) - int(events)
        if int(counted) > 1:
            doubled += 1
        if tx not in answered.sales:
            unanswered += int(counted) > 0
            expected_sum += Decimal(amount) if int(counted) else 0
            continue
        extra += int(events) > 1
        if int(counted) == 1:
            counted_once += 1
            expected_sum += answered.sales[tx]
    lost = len(answered.sales.keys() - counted_txs)
    return Tally(
        answered=len(answered.sales), counted=counted_once, lost=lost, doubled=doubled,
        unanswered_counted=unanswered, copies=copies, extra_calls=extra,
        exact=rollups_equal(stack, universe, expected_sum, counted_once + unanswered),
    )  # fmt: skip


def rollups_equal(stack: LocalStack, universe: str, total: Decimal, purchases: int) -> bool:
    """Every public rollup of the universe says ``purchases`` purchases worth ``total``."""
    where = f"WHERE universe = '{universe}'"
    sql = (
        f"SELECT (SELECT count() FROM tracker.sales {where}), "
        f"(SELECT sum(amount) FROM tracker.sales {where}), "
        + ", ".join(
            f"(SELECT sum(purchases) FROM tracker.{view} {where}), "
            f"(SELECT sum(turnover) FROM tracker.{view} {where})"
            for view in (
                "campaign_turnover",
                "customer_turnover",
                "link_turnover",
                "campaign_turnover_daily",
            )
        )
        + " FORMAT TabSeparated"
    )
    values = stack.query(sql)[0]
    counts = {int(v) for v in values[0::2]}
    sums = {Decimal(v) for v in values[1::2]}
    return counts == {purchases} and sums == {total}


def settle(
    stack: LocalStack,
    universe: str,
    answered: Answered,
    timeout: float = 120.0,
    *,
    stable_s: float | None = None,
) -> Tally:
    """Wait until every answered call is counted (or ``timeout``), then tally. With
    ``stable_s`` (a scenario that may lose calls), also once the tally has not changed for
    that long."""
    deadline = time.monotonic() + timeout
    last: tuple[Tally | None, float] = (None, time.monotonic())
    while True:
        try:
            result = tally(stack, universe, answered)
        except OSError:
            result = None  # ClickHouse restarting
        if result is not None and result.lost == 0 and result.exact:
            return result
        if result != last[0]:
            last = (result, time.monotonic())
        elif (
            stable_s is not None
            and result is not None
            and result.exact
            and time.monotonic() - last[1] >= stable_s
        ):
            return result
        if time.monotonic() > deadline:
            if result is None:
                return tally(stack, universe, answered)
            return result
        time.sleep(1.0)
