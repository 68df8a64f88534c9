from pathlib import Path

import pytest

from ingest.spool import Spool, SpoolFull


def test_records_come_back_in_order_and_acknowledged_ones_are_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    for i in range(5):
        spool.append(f"r{i}".encode())
    records, cursor = spool.read(3)
    assert records == [b"r0", b"r1", b"r2"]
    spool.acknowledge(cursor)
    records, cursor = spool.read(10)
    assert records == [b"r3", b"r4"]
    spool.acknowledge(cursor)
    assert spool.empty()
    assert spool.read(10)[0] == []
    spool.close()


def test_a_restart_resumes_after_the_last_acknowledged_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    for i in range(4):
        spool.append(f"r{i}".encode())
    _, cursor = spool.read(2)
    spool.acknowledge(cursor)
    spool.close()
    reopened = Spool(tmp_path, max_bytes=10_000)
    assert reopened.read(10)[0] == [b"r2", b"r3"]
    assert not reopened.empty()
    reopened.close()


def test_a_frame_torn_by_a_crash_is_not_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    spool.append(b"whole")
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    with segment.open("ab") as f:
        f.write(b"\x00\x00\x00\x10half")  # header says 16 bytes, 4 written
    reopened = Spool(tmp_path, max_bytes=10_000)
    assert reopened.read(10)[0] == [b"whole"]
    reopened.close()


def test_segments_rotate_and_drained_ones_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100_000, segment_bytes=100)
    for i in range(50):
        spool.append(b"x" * 20 + str(i).encode())
    assert len(list(tmp_path.glob("*.spool"))) > 5
    while not spool.empty():
        _, cursor = spool.read(7)
        spool.acknowledge(cursor)
    assert len(list(tmp_path.glob("*.spool"))) <= 1
    spool.close()


def test_the_spool_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    with pytest.raises(SpoolFull):
        for _ in range(20):
            spool.append(b"y" * 10)
    assert spool.full()
    spool.close()
