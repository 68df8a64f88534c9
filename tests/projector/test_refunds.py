"""Refunds, pure: their reading, their decision against the counted sale, and project() with
refunds beside sales in one batch, in the write in flight, and before their sale."""

from __future__ import annotations

from decimal import Decimal

from aiokafka import TopicPartition

from projector.attribution import Attribution
from projector.decode import Events
from projector.project import Facts, Projected, Written, project
from projector.refunds import Refunded, SaleFacts, decide_refunds
from projector.rows import REFUNDS_CALLS_COLUMNS, Position, Row
from scenario import T0, refund, sale
from schemas.events import SaleCall
from schemas.raw import RefundRequest
from schemas.refunds import RefundCall, read_refund

SALES = TopicPartition("t.sales", 0)
WINDOW = 30 * 86_400_000
SALE = SaleFacts(Decimal("100"), "EUR", "alice", "spring", "hero", "main", T0)


def column(row: Row, name: str) -> object:
    return row[REFUNDS_CALLS_COLUMNS.index(name)]


def outcomes(*refunds: RefundCall, sale: SaleFacts | None = SALE) -> list[tuple[str, str]]:
    decided, _ = decide_refunds([(r, sale) for r in refunds], {})
    return [(o.decision.status, o.decision.reason) for o in decided]


def test_a_partial_refund_then_the_rest_without_an_amount_undoes_the_purchase_once() -> None:
    first = refund("r1", "t1", "a", amount="30.5")
    rest = refund("r2", "t1", "b")
    decided, after = decide_refunds([(first, SALE), (rest, SALE)], {})
    assert [(o.amount, o.full) for o in decided] == [
        (Decimal("30.5"), False),
        (Decimal("69.5"), True),
    ]
    assert after[("demo", "t1")].amount == Decimal("100")
    assert outcomes(first, rest, refund("r3", "t1", "c")) == [
        ("counted", ""), ("counted", ""), ("rejected", "refund_above_remaining"),
    ]  # fmt: skip


def test_a_refund_above_what_is_left_is_rejected_and_changes_nothing() -> None:
    decided, after = decide_refunds(
        [
            (refund("r1", "t1", "a", amount="60"), SALE),
            (refund("r2", "t1", "b", amount="40.0001"), SALE),
        ],
        {},
    )
    assert [o.decision.reason for o in decided] == ["", "refund_above_remaining"]
    assert after[("demo", "t1")].amount == Decimal("60")


def test_a_refund_id_counts_once_ever_even_with_another_amount() -> None:
    assert outcomes(
        refund("r1", "t1", "a", amount="10"),
        refund("r2", "t1", "a", amount="20"),
        refund("r1", "t1", "a", amount="10"),
    ) == [("counted", ""), ("duplicate", "refund_already_counted"), ("duplicate", "redelivered")]
    counted_before = {("demo", "t1"): Refunded(Decimal("10"), {"a": "r0"})}
    decided, _ = decide_refunds([(refund("r9", "t1", "a"), SALE)], counted_before)
    assert decided[0].decision.reason == "refund_already_counted"


def test_a_refund_of_no_counted_sale_is_rejected_without_burning_its_refund_id() -> None:
    early = refund("r1", "t1", "a")
    decided, after = decide_refunds([(early, None), (refund("r2", "t1", "a"), SALE)], {})
    assert [(o.decision.status, o.decision.reason) for o in decided] == [
        ("rejected", "sale_unknown"), ("counted", ""),
    ]  # fmt: skip
    assert after[("demo", "t1")].ids == {"a": "r2"}


def test_a_refund_in_another_currency_is_rejected_and_one_naming_none_takes_the_sales() -> None:
    assert outcomes(refund("r1", "t1", "a", currency="USD")) == [("rejected", "currency_mismatch")]
    assert outcomes(refund("r1", "t1", "a", currency="EUR"), refund("r2", "t1", "b")) == [
        ("counted", ""), ("rejected", "refund_above_remaining"),
    ]  # fmt: skip


def test_reading_a_refund_checks_its_shape_with_exact_reasons() -> None:
    def read(**fields: str) -> tuple[str, str]:
        r = read_refund(RefundRequest(event_id="e", received_at_ms=1, fields=fields))
        return r.status, r.reason

    ok = {"universe": "u", "id": "t1", "refund_id": "r1"}
    assert read(**ok) == ("accepted", "")
    assert read(**ok, amount="12,50", currency="eur") == ("accepted", "")
    assert read(universe="u", id="t1") == ("rejected", "refund_id_invalid")
    assert read(universe="u", refund_id="r1") == ("rejected", "id_invalid")
    assert read(**ok, amount="1e3") == ("rejected", "amount_malformed")
    assert read(**ok, amount="0.00") == ("rejected", "refund_amount_zero")
    assert read(**ok, currency="euro") == ("rejected", "currency_invalid")
    assert read(**{**ok, "universe": ""}) == ("rejected", "universe_missing")
    refused = RefundRequest(event_id="e", received_at_ms=1, fields=ok, problem="duplicate_field")
    assert read_refund(refused).reason == "duplicate_field"
    assert read_refund(RefundRequest(event_id="e", received_at_ms=1, fields=ok)).amount == ""


# -- project(): refunds beside sales -------------------------------------------------------------


def at(offset: int) -> Position:
    return (SALES.topic, SALES.partition, offset, 0, 1000 + offset)


def batch(events: list[SaleCall | RefundCall], first: int = 0) -> Events:
    calls = [(e, at(first + i)) for i, e in enumerate(events) if isinstance(e, SaleCall)]
    refunds = [(e, at(first + i)) for i, e in enumerate(events) if isinstance(e, RefundCall)]
    return Events({SALES: (first, first + len(events) - 1)}, [], calls, [], [], refunds)


def run(events: Events, facts: Facts | None = None, in_flight: Written | None = None) -> Projected:
    return project(events, facts or Facts(generation=1), in_flight, window_ms=WINDOW)


def statuses(projected: Projected) -> list[tuple[object, object]]:
    return [(column(r, "status"), column(r, "reason")) for r, _ in projected.rows.refunds]


def test_a_sale_and_its_refund_in_one_batch_count_and_the_refund_carries_its_attribution() -> None:
    s = sale("e1", "t1", amount="80", currency="EUR", context=("alice", "spring", "hero", T0 - 1))
    projected = run(batch([s, refund("r1", "t1", "a", amount="20", at=T0 + 86_400_000)]))
    [(row, position)] = projected.rows.refunds
    assert position == at(1)
    assert [column(row, n) for n in ("status", "amount", "currency", "full_refund")] == [
        "counted", Decimal("20"), "EUR", 0,
    ]  # fmt: skip
    assert [column(row, n) for n in ("customer_id", "campaign_id", "link_id", "product")] == [
        "alice", "spring", "hero", "main",
    ]  # fmt: skip
    assert projected.refunds == [("counted", "")]
    assert projected.written.refunded[("demo", "t1")].amount == Decimal("20")


def test_a_refund_before_its_sale_in_the_same_batch_is_rejected_as_in_any_other_batching() -> None:
    events: list[SaleCall | RefundCall] = [
        refund("r1", "t1", "a"), sale("e1", "t1", amount="80"), refund("r2", "t1", "a"),
    ]  # fmt: skip
    together = statuses(run(batch(events)))
    apart = [statuses(run(batch([e], first=i))) for i, e in enumerate(events)]
    assert together == [("rejected", "sale_unknown"), ("counted", "")]
    # One at a time, the sale comes from the write in flight: the same decisions.
    assert apart[0] == [("rejected", "sale_unknown")]
    first_sale = run(batch([events[1]], first=1))
    assert statuses(run(batch([events[2]], first=2), in_flight=first_sale.written)) == [
        ("counted", "")
    ]


def test_refunds_in_flight_and_in_clickhouse_count_towards_what_is_left() -> None:
    s = sale("e1", "t1", amount="100")
    sold = run(batch([s]))
    first = run(batch([refund("r1", "t1", "a", amount="70")], first=1), in_flight=sold.written)
    second = run(
        batch(
            [refund("r2", "t1", "b", amount="40"), refund("r3", "t1", "c", amount="30")], first=2
        ),
        facts=Facts(generation=1, sales={("demo", "t1"): SALE}),
        in_flight=first.written,
    )
    # 70 in flight (ClickHouse does not show it yet): 40 is too much, 30 is the rest.
    assert statuses(second) == [("rejected", "refund_above_remaining"), ("counted", "")]
    assert [column(r, "full_refund") for r, _ in second.rows.refunds] == [0, 1]


def test_a_refund_of_a_sale_attributed_in_flight_takes_that_attribution() -> None:
    s = sale("e1", "t1", amount="10", customer_id="bob")
    sold = run(batch([s]))
    assert sold.written.sales == [(s, Attribution(customer_id="bob"))]
    refunded = run(batch([refund("r1", "t1", "a")], first=1), in_flight=sold.written)
    [(row, _)] = refunded.rows.refunds
    assert (column(row, "customer_id"), column(row, "full_refund")) == ("bob", 1)


def test_a_batch_without_refunds_carries_no_refund_state() -> None:
    projected = run(batch([sale("e1", "t1")]))
    assert projected.rows.refunds == [] and projected.written.refunded == {}
