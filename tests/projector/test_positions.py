from aiokafka import TopicPartition

from projector.positions import (
    LogState,
    PositionRow,
    Regression,
    Resume,
    Stored,
    current_positions,
    offset_to_compare,
    plan,
    record_fingerprint,
    verify,
)

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


# -- fetches the loop did not ask for ----------------------------------------------------------


def test_a_fetch_below_the_position_from_where_we_put_the_consumer_skips_what_is_written() -> None:
    # A rebuild swapped in tables that end further than this instance had read.
    result = plan({TP: (10, 19)}, {TP: 15}, {}, {TP: 10})
    assert result.keep_from == {TP: 15}
    assert result.verify == set()


def test_a_fetch_that_starts_elsewhere_than_where_we_put_the_consumer_is_checked_first() -> None:
    # Put at 500; the client reset an out-of-range fetch to the start of a recreated log.
    result = plan({TP: (0, 9)}, {TP: 500}, {}, {TP: 500})
    assert result.verify == {TP}
    assert result.keep_from == {} and result.rewind_to == {}


def test_a_fetch_that_starts_after_where_we_put_the_consumer_is_a_gap_not_a_reset() -> None:
    # Offset 192 has no record (a write the broker lost when it was killed): the fetch from
    # 192 returns 193 on. Checking the log and seeking back to 192 would loop forever.
    result = plan({TP: (193, 199)}, {TP: 192}, {}, {TP: 192})
    assert result.verify == set()
    assert result.rewind_to == {TP: 192}  # once; after that the gap is accepted
    again = plan({TP: (193, 199)}, {TP: 192}, {TP: 192}, {TP: 192})
    assert again.verify == set()
    assert again.keep_from == {TP: 193}
    assert again.gaps_accepted == {TP: (192, 193)}


def test_a_held_partition_is_checked_whatever_was_fetched() -> None:
    result = plan({TP: (15, 19)}, {TP: 15}, {}, {TP: 15}, held={TP})
    assert result.verify == {TP}
    assert result.keep_from == {}


# -- fingerprints and stored positions ----------------------------------------------------------


def test_fingerprints_depend_on_key_and_value_and_are_never_the_unknown_zero() -> None:
    assert record_fingerprint(b"k", b"v") == record_fingerprint(b"k", b"v")
    assert record_fingerprint(b"ab", b"c") != record_fingerprint(b"a", b"bc")
    assert record_fingerprint(None, b"v") != record_fingerprint(b"", b"v")
    assert record_fingerprint(b"k", b"v") != record_fingerprint(b"k", b"w")
    assert 0 < record_fingerprint(None, None) < 2**64


def test_the_current_epoch_is_the_highest_accepted_and_starts_at_its_offset() -> None:
    rows: list[PositionRow] = [
        ("t", 0, 0, (500, 77), 0),  # the old log, written up to 499
        ("t", 0, 1, (3, 0), 1),  # accepted: epoch 1 from offset 3, nothing written yet
        ("t", 1, 0, (40, 0), 0),  # written before fingerprints existed
        ("t", 1, 0, (42, 9), 0),
        ("t", 2, 0, (7, 0), 0),
    ]
    assert current_positions(rows) == {
        TP: Stored(epoch=1, next_offset=3, fingerprint=None, written=False),
        TopicPartition("t", 1): Stored(epoch=0, next_offset=42, fingerprint=9),
        TopicPartition("t", 2): Stored(epoch=0, next_offset=7, fingerprint=None),
    }
    rows.append(("t", 0, 1, (10, 55), 0))  # epoch 1 written up to 9
    assert current_positions(rows)[TP] == Stored(epoch=1, next_offset=10, fingerprint=55)


# -- the decision: resume or refuse -------------------------------------------------------------

WRITTEN = Stored(epoch=0, next_offset=500, fingerprint=0xABC)


def test_nothing_written_resumes_from_the_earliest_offset() -> None:
    assert verify(None, LogState(earliest=3, high_watermark=10)) == Resume(3)


def test_the_same_log_resumes_at_the_position() -> None:
    log = LogState(earliest=0, high_watermark=900, found=0xABC)
    assert offset_to_compare(WRITTEN, 0, 900) == 499
    assert verify(WRITTEN, log) == Resume(500)


def test_a_log_that_ends_below_the_position_is_a_regression() -> None:
    assert offset_to_compare(WRITTEN, 0, 120) is None
    verdict = verify(WRITTEN, LogState(earliest=0, high_watermark=120))
    assert isinstance(verdict, Regression)
    assert "120" in verdict.reason and "500" in verdict.reason


def test_another_record_below_the_position_is_a_regression() -> None:
    # A recreated log that grew past our position: only the fingerprint tells.
    verdict = verify(WRITTEN, LogState(earliest=0, high_watermark=900, found=0xDEF))
    assert isinstance(verdict, Regression)
    assert "0000000000000abc" in verdict.reason and "0000000000000def" in verdict.reason
    assert isinstance(verify(WRITTEN, LogState(0, 900, found=None)), Regression)


def test_without_a_stored_fingerprint_only_the_high_watermark_is_checked() -> None:
    legacy = Stored(epoch=0, next_offset=500, fingerprint=None)
    assert offset_to_compare(legacy, 0, 900) is None
    assert verify(legacy, LogState(0, 900)) == Resume(500, unverified=True)
    assert isinstance(verify(legacy, LogState(0, 499)), Regression)


def test_records_gone_by_retention_are_a_gap_not_a_regression() -> None:
    verdict = verify(WRITTEN, LogState(earliest=600, high_watermark=900))
    assert verdict == Resume(600, gap=(500, 600), unverified=True)


def test_an_accepted_epoch_starts_at_its_offset_once_the_log_has_it() -> None:
    start = Stored(epoch=1, next_offset=3, fingerprint=None, written=False)
    assert verify(start, LogState(earliest=0, high_watermark=3)) == Resume(3)
    assert isinstance(verify(start, LogState(earliest=0, high_watermark=2)), Regression)
