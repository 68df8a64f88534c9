"""The projector's pure heart: a decoded batch and the facts looked up -> rows, no services."""

from collections.abc import Sequence

from aiokafka import TopicPartition

from projector.attribution import DAY_MS
from projector.decode import Events, Failure
from projector.dedupe import dedupe_key
from projector.positions import Stored
from projector.project import Facts, Projected, Written, project
from projector.rows import Position, Row
from scenario import T0, click, sale
from schemas.events import Click, ClickContext, SaleCall

SALES = TopicPartition("t.sales", 0)
CLICKS = TopicPartition("t.clicks", 0)
WINDOW = 30 * DAY_MS


def at(tp: TopicPartition, offset: int) -> Position:
    return (tp.topic, tp.partition, offset, 0, 1000 + offset)


def batch(
    calls: Sequence[SaleCall] = (),
    clicks: Sequence[Click] = (),
    failures: Sequence[Failure] = (),
    *,
    first: int = 0,
) -> Events:
    """Calls from ``first`` on in SALES, clicks from ``first`` on in CLICKS (then failures)."""
    placed_calls = [(c, at(SALES, first + i)) for i, c in enumerate(calls)]
    placed_clicks = [(c, at(CLICKS, first + i)) for i, c in enumerate(clicks)]
    offsets: dict[TopicPartition, list[int]] = {}
    for position in [p for _, p in placed_calls + placed_clicks] + [f.position for f in failures]:
        offsets.setdefault(TopicPartition(position[0], position[1]), []).append(position[2])
    spans = {tp: (min(o), max(o)) for tp, o in offsets.items()}
    return Events(spans, placed_clicks, placed_calls, list(failures), [])


def run(events: Events, facts: Facts | None = None, in_flight: Written | None = None) -> Projected:
    return project(events, facts or Facts(generation=1), in_flight, window_ms=WINDOW)


def status(row: Row) -> tuple[object, object]:
    return row[4], row[5]


def campaign(row: Row) -> object:
    return row[10]


def test_a_refresh_in_the_same_batch_counts_the_sale_once() -> None:
    first, refresh = sale("e1", "t1"), sale("e2", "t1")
    projected = run(batch([first, refresh]))
    assert [status(row) for row, _ in projected.rows.calls] == [
        ("counted", ""),
        ("duplicate", "transaction_already_counted"),
    ]
    assert projected.duplicates == ["transaction_already_counted"]
    assert projected.written.counted == {dedupe_key(first): "e1"}
    assert projected.written.next_offsets == {SALES: 2}


def test_a_sale_already_counted_in_clickhouse_is_a_duplicate() -> None:
    call = sale("e2", "t1")
    facts = Facts(generation=1, counted={dedupe_key(call): "e1"})
    projected = run(batch([call]), facts)
    [(row, _)] = projected.rows.calls
    assert status(row) == ("duplicate", "transaction_already_counted")
    assert projected.written.counted == {}


def test_a_sale_is_attributed_to_a_click_of_the_same_batch() -> None:
    clicked = click("click-1", "c1", "k1", "l1", at=T0 - 10)
    call = sale("e1", "t1", customer_id="c1", at=T0)
    projected = run(batch([call], [clicked]))
    [(click_row, _)] = projected.rows.clicks
    [(call_row, _)] = projected.rows.calls
    assert click_row[2] == "k1"
    assert status(call_row) == ("counted", "")
    assert campaign(call_row) == "k1"


def test_a_sale_is_attributed_to_the_stored_click_when_later_than_the_batch_one() -> None:
    clicked = click("click-1", "c1", "k1", "l1", at=T0 - 10)
    stored = ClickContext("demo", "c1", "k2", "l2", "main", T0 - 5, "click-2")
    facts = Facts(generation=1, clicks=[stored])
    projected = run(batch([sale("e1", "t1", customer_id="c1", at=T0)], [clicked]), facts)
    [(row, _)] = projected.rows.calls
    assert campaign(row) == "k2"


def test_a_rejected_call_is_recorded_and_claims_no_transaction() -> None:
    rejected = sale("e1", "t1", status="rejected", reason="amount_malformed", amount="")
    projected = run(batch([rejected, sale("e2", "t1")]))
    assert [status(row) for row, _ in projected.rows.calls] == [
        ("rejected", "amount_malformed"),
        ("counted", ""),
    ]
    assert projected.rejects == ["amount_malformed"]
    assert projected.written.counted == {("demo", "t1", ""): "e2"}


def test_records_already_written_are_skipped() -> None:
    calls = [sale("e1", "t1"), sale("e2", "t2"), sale("e3", "t3")]
    facts = Facts(generation=1, positions={SALES: Stored(0, next_offset=2, fingerprint=1001)})
    projected = run(batch(calls), facts)
    assert [position[2] for _, position in projected.rows.calls] == [2]
    assert projected.plan.keep_from == {SALES: 2}
    assert projected.written.next_offsets == {SALES: 3}


def test_what_the_write_in_flight_holds_counts_as_written() -> None:
    refresh = sale("e2", "t1")
    in_flight = Written(1, {SALES: 5}, {dedupe_key(refresh): "e1"}, [])
    projected = run(batch([refresh, sale("e3", "t3")], first=4), in_flight=in_flight)
    # Offset 4 is in the batch being written: skipped, not rewound to.
    assert projected.plan.keep_from == {SALES: 5} and not projected.plan.rewind_to
    [(row, _)] = projected.rows.calls
    assert status(row) == ("counted", "")
    refreshed = run(batch([refresh], first=5), in_flight=in_flight)
    assert status(refreshed.rows.calls[0][0]) == ("duplicate", "transaction_already_counted")


def test_a_record_that_does_not_decode_becomes_a_dead_letter_row() -> None:
    failure = Failure(at(SALES, 0), "not JSON", b"key", b"\xff{")
    projected = run(batch(failures=[failure]))
    [(row, position)] = projected.rows.dead_letters
    assert position == at(SALES, 0)
    assert row == (*at(SALES, 0), "not JSON", "\ufffd{")
    assert projected.events.failures == [failure]
    assert projected.written.next_offsets == {SALES: 1}


def test_a_partition_held_for_a_log_check_writes_nothing() -> None:
    events = batch([sale("e1", "t1")])
    projected = project(events, Facts(generation=1), None, window_ms=WINDOW, held={SALES})
    assert projected.plan.verify == {SALES}
    assert projected.rows.calls == [] and projected.written.next_offsets == {}
