from aiokafka import TopicPartition

from projector.positions import plan

TP = TopicPartition("t", 0)


def test_a_fresh_partition_writes_everything() -> None:
    assert plan({TP: (0, 9)}, {}, {}).keep_from == {TP: 0}


def test_records_already_in_clickhouse_are_skipped_after_a_crash() -> None:
    # Written up to offset 14 (next 15), commit lost: the refetch starts at 10.
    result = plan({TP: (10, 19)}, {TP: 15}, {})
    assert result.keep_from == {TP: 15}
    assert result.rewind_to == {}


def test_a_batch_entirely_written_already_keeps_nothing() -> None:
    assert plan({TP: (10, 14)}, {TP: 15}, {}).keep_from == {TP: 15}


def test_a_fetch_past_what_clickhouse_holds_rewinds() -> None:
    result = plan({TP: (30, 39)}, {TP: 20}, {})
    assert result.rewind_to == {TP: 20}
    assert TP not in result.keep_from


def test_a_gap_that_persists_after_rewinding_is_accepted_once() -> None:
    result = plan({TP: (30, 39)}, {TP: 20}, {TP: 20})
    assert result.keep_from == {TP: 30}
    assert result.gaps_accepted == {TP: (20, 30)}
