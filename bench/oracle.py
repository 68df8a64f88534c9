"""The expected totals of a log: every public table re-derived from the events with plain
loops, written apart from the projector's code, so an exact match means the projector is
right, not just self-consistent. The benchmark and the tests compare with it. Every total is
per currency (the call's, '' when it named none): amounts of two currencies never add up.

Refunds (in the same list as the calls, in log order per transaction): a refund counts once
per (universe, transaction, refund id), only after its transaction's counted sale, in the
sale's currency if it names one, and never beyond what is left; it lowers the sale's
campaign, link and customer on the refund's own day, and the one that empties the sale
lowers its purchase count too. The tables hold net figures; ``gross`` and ``refunds`` the
rest of what the public views show."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.workload import WINDOW_MS
from schemas.events import Click, SaleCall
from schemas.refunds import RefundCall

TABLES = ("campaign", "customer", "link", "daily")


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
    # Per table: [gross purchases, gross turnover] of every key, and [refunds, refunded
    # purchases, refunded turnover] of the keys that had refunds.
    gross: dict[str, dict[Any, list[Any]]] = field(default_factory=lambda: defaultdict(dict))
    refunds: dict[str, dict[Any, list[Any]]] = field(default_factory=lambda: defaultdict(dict))
    refund_calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def turnover(self) -> Decimal:
        """The sum of every amount whatever its currency: a checksum, not a turnover."""
        return sum((turnover for _, turnover in self.campaign.values()), Decimal(0))


def _add(table: dict[Any, list[Any]], key: Any, amount: Decimal) -> None:
    entry = table.setdefault(key, [0, Decimal(0)])
    entry[0] += 1
    entry[1] += amount


def _sold(out: Expected, keys: dict[str, Any], amount: Decimal) -> None:
    for name, key in keys.items():
        _add(out.gross[name], key, amount)
        _add(getattr(out, name), key, amount)


def _refunded(out: Expected, keys: dict[str, Any], amount: Decimal, full: bool) -> None:
    for name, key in keys.items():
        gross = out.gross[name].setdefault(key, [0, Decimal(0)])
        net = getattr(out, name).setdefault(key, [0, Decimal(0)])
        entry = out.refunds[name].setdefault(key, [0, 0, Decimal(0)])
        entry[0] += 1
        entry[1] += int(full)
        entry[2] += amount
        net[0] = gross[0] - entry[1]
        net[1] = gross[1] - entry[2]


def oracle(
    clicks: list[Click], calls: Sequence[SaleCall | RefundCall], window_ms: int = WINDOW_MS
) -> Expected:
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
    # Per counted sale with an id: (amount, currency, customer, campaign, link), refunded so
    # far, refund ids counted.
    sold: dict[tuple[str, str], tuple[Decimal, str, str, str, str]] = {}
    refunded: dict[tuple[str, str], Decimal] = {}
    refund_ids: set[tuple[str, str, str]] = set()
    for call in calls:
        if isinstance(call, RefundCall):
            status = _refund(out, call, sold, refunded, refund_ids)
            out.refund_calls[status] += 1
            continue
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
        if call.transaction_id:
            sold[key] = (amount, currency, customer, campaign, link)
        _sold(out, _keys(call.universe, campaign, link, customer, day, currency), amount)
    return out


def _keys(
    universe: str, campaign: str, link: str, customer: str, day: str, currency: str
) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "campaign": (universe, campaign, currency),
        "link": (universe, campaign, link, currency),
        "daily": (universe, campaign, day, currency),
    }
    if customer:
        keys["customer"] = (universe, customer, currency)
    return keys


def _refund(
    out: Expected,
    r: RefundCall,
    sold: dict[tuple[str, str], tuple[Decimal, str, str, str, str]],
    refunded: dict[tuple[str, str], Decimal],
    refund_ids: set[tuple[str, str, str]],
) -> str:
    """The refund's status ("counted", "duplicate", "rejected"), applied when counted."""
    if r.status == "rejected":
        return "rejected"
    if (r.universe, r.transaction_id, r.refund_id) in refund_ids:
        return "duplicate"
    sale = sold.get((r.universe, r.transaction_id))
    if sale is None:
        return "rejected"
    amount, currency, customer, campaign, link = sale
    if r.currency not in ("", currency):
        return "rejected"
    left = amount - refunded.get((r.universe, r.transaction_id), Decimal(0))
    wanted = Decimal(r.amount) if r.amount else left
    if not 0 < wanted <= left:
        return "rejected"
    refund_ids.add((r.universe, r.transaction_id, r.refund_id))
    refunded[(r.universe, r.transaction_id)] = amount - left + wanted
    day = datetime.fromtimestamp(r.received_at_ms / 1000, tz=UTC).date().isoformat()
    keys = _keys(r.universe, campaign, link, customer, day, currency)
    _refunded(out, keys, wanted, full=wanted == left)
    return "counted"
