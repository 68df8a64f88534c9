from projector.dedupe import (
    ALREADY_COUNTED,
    COUNTED,
    REDELIVERED,
    CountedCache,
    Decision,
    decide,
    dedupe_key,
)
from scenario import sale


def test_first_call_of_a_transaction_counts_and_refreshes_are_duplicates() -> None:
    calls = [sale("e1", "t1"), sale("e2", "t1"), sale("e3", "t1", source="api")]
    assert decide(calls, {}) == [COUNTED, ALREADY_COUNTED, ALREADY_COUNTED]


def test_a_transaction_counted_in_an_earlier_batch_is_a_duplicate() -> None:
    call = sale("e2", "t1")
    assert decide([call], {dedupe_key(call): "e1"}) == [ALREADY_COUNTED]


def test_a_redelivered_copy_of_the_counting_call_is_recognised() -> None:
    call = sale("e1", "t1")
    assert decide([call, call], {}) == [COUNTED, REDELIVERED]
    assert decide([call], {dedupe_key(call): "e1"}) == [REDELIVERED]


def test_calls_without_id_each_count_but_their_copies_do_not() -> None:
    a, b = sale("e1", ""), sale("e2", "")
    assert decide([a, b, a], {}) == [COUNTED, COUNTED, REDELIVERED]


def test_the_same_transaction_id_in_two_universes_counts_twice() -> None:
    assert decide([sale("e1", "t1", universe="u1"), sale("e2", "t1", universe="u2")], {}) == [
        COUNTED,
        COUNTED,
    ]


def test_rejected_calls_keep_their_reason_and_do_not_claim_the_transaction() -> None:
    rejected = sale("e1", "t1", status="rejected", reason="amount_malformed", amount="")
    assert decide([rejected, sale("e2", "t1")], {}) == [
        Decision("rejected", "amount_malformed"),
        COUNTED,
    ]


def test_counted_cache_evicts_the_least_recently_used() -> None:
    cache = CountedCache(2)
    cache.put_all([(("u", "a", ""), "e1"), (("u", "b", ""), "e2")])
    assert cache.get(("u", "a", "")) == "e1"
    cache.put_all([(("u", "c", ""), "e3")])
    assert cache.get(("u", "b", "")) is None
    assert cache.get(("u", "a", "")) == "e1"
    assert len(cache) == 2
