"""A batch in flight and its outcome, and when memory goes to the spool (ingest/flight.py)."""

from __future__ import annotations

import math

import pytest

from ingest.flight import Flight, outcome, spill_due
from ingest.message import Message
from ingest.spool_cursor import Cursor


def messages(n: int) -> list[Message]:
    return [Message("t.sales", b"k%d" % (i % 3), b"%d" % i) for i in range(n)]


def test_a_late_batch_delivered_after_all_has_every_copy_acknowledged_and_nothing_put_back() -> (
    None
):
    made = messages(4)
    flight = Flight(made, made=made, positions=[Cursor(1, 0), Cursor(1, 20)])
    assert not flight.on_disk() and flight.uncopied() == made[2:]
    done = outcome(flight, failed=[])
    assert done.delivered_copies == [Cursor(1, 0), Cursor(1, 20)]
    assert done.back_to_memory == []


def test_failed_messages_without_a_copy_go_back_to_memory_in_order_and_delivered_copies_are_passed() -> (
    None
):
    made = messages(6)
    # The first three copied to the spool before the spool refused more; 1 and 4 delivered.
    flight = Flight(made, made=made, positions=[Cursor(2, 0), Cursor(2, 20), Cursor(2, 40)])
    failed = [made[0], made[2], made[3], made[5]]
    done = outcome(flight, failed)
    # Message 1 was delivered: its copy is passed over; 0 and 2 are sent again from the spool.
    assert done.delivered_copies == [Cursor(2, 20)]
    # 3 and 5 have no copy: back at memory's head, in order, behind what the spool holds.
    assert done.back_to_memory == [made[3], made[5]]


def test_a_batch_read_from_the_spool_keeps_its_failures_there() -> None:
    made = messages(3)
    positions = [Cursor(5, 0), Cursor(5, 30), Cursor(5, 60)]
    flight = Flight.from_spool(made, positions, Cursor(5, 90))
    assert flight.on_disk() and not flight.from_memory
    done = outcome(flight, failed=[made[1]])
    assert done.delivered_copies == [Cursor(5, 0), Cursor(5, 60)]
    assert done.back_to_memory == []


def test_messages_equal_in_value_are_told_apart_by_identity() -> None:
    # Two calls can carry the same bytes (a page reloaded): each is its own message.
    twice = [Message("t.sales", b"k", b"same"), Message("t.sales", b"k", b"same")]
    flight = Flight(twice, made=twice, positions=[Cursor(1, 0)])
    done = outcome(flight, failed=[twice[1]])
    assert done.delivered_copies == [Cursor(1, 0)]
    assert done.back_to_memory == [twice[1]]


@pytest.mark.parametrize(
    ("broker_ok", "memory_age_s", "since_refusal_s", "due"),
    [
        (True, 0.0, math.inf, False),  # healthy: memory is about to be sent
        (True, 0.9, math.inf, False),
        (True, 1.5, math.inf, True),  # waited longer than the deadline (a long drain)
        (False, 0.0, math.inf, True),  # the broker does not answer in time: at once
        (False, 5.0, 0.5, False),  # refused a moment ago: memory is the buffer till the retry
        (False, 5.0, 2.5, True),  # then tried again
    ],
)
def test_when_memory_goes_to_the_spool(
    broker_ok: bool, memory_age_s: float, since_refusal_s: float, due: bool
) -> None:
    assert (
        spill_due(
            broker_ok=broker_ok,
            memory_age_s=memory_age_s,
            deadline_s=1.0,
            since_refusal_s=since_refusal_s,
            retry_s=2.0,
        )
        is due
    )
