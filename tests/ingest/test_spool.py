import errno
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.disk import segments_bytes, small_filesystem
from ingest.spool import DISK_ERROR, SPOOL_FULL, Spool
from ingest.spool_cursor import CURSOR_BYTES, CursorFile
from ingest.spool_format import encode_frame


def test_records_come_back_in_order_and_acknowledged_ones_are_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    for i in range(5):
        spool.append([f"r{i}".encode()])
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
        spool.append([f"r{i}".encode()])
    _, cursor = spool.read(2)
    spool.acknowledge(cursor)
    spool.close()
    reopened = Spool(tmp_path, max_bytes=10_000)
    assert reopened.read(10)[0] == [b"r2", b"r3"]
    assert not reopened.empty()
    reopened.close()


def test_a_frame_torn_by_a_crash_is_not_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    spool.append([b"whole"])
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
        spool.append([b"x" * 20 + str(i).encode()])
    assert len(list(tmp_path.glob("*.spool"))) > 5
    while not spool.empty():
        _, cursor = spool.read(7)
        spool.acknowledge(cursor)
    assert len(list(tmp_path.glob("*.spool"))) <= 1
    spool.close()


def test_the_spool_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    appended = spool.append([b"y" * 10] * 20)
    # Taken while under the bound: 5 frames of 22 bytes (110), the 6th refused.
    assert len(appended.positions) == 5
    assert appended.refusal is not None and appended.refusal.reason == SPOOL_FULL
    assert spool.full()
    assert spool.append([b"z"]).positions == []
    spool.close()


# -- damage: a torn or corrupt frame never stops the reader -------------------------------------


class Damages:
    """What the spool reports through ``on_damage``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def __call__(self, kind: str, size: int) -> None:
        self.seen.append((kind, size))


def write_records(directory: Path, payloads: list[bytes]) -> Path:
    """A closed spool holding ``payloads``; returns its one segment."""
    spool = Spool(directory, max_bytes=10_000_000)
    for payload in payloads:
        spool.append([payload])
    spool.close()
    (segment,) = directory.glob("*.spool")
    return segment


def read_all(spool: Spool) -> list[bytes]:
    """Everything the spool holds, acknowledging as it goes (the way the publisher does)."""
    found: list[bytes] = []
    previous = None
    while not spool.empty():
        records, cursor = spool.read(3)
        assert records or cursor != previous, "stuck: bytes pending that the reader never passes"
        found += records
        spool.acknowledge(cursor)
        previous = cursor
    return found


def test_a_torn_tail_is_cut_counted_and_logged_and_later_appends_are_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segment = write_records(tmp_path, [b"r0", b"r1"])
    intact = segment.stat().st_size
    torn = encode_frame(b"torn by a crash")[:-4]  # its header says more bytes than present
    with segment.open("ab") as f:
        f.write(torn)
    damages = Damages()
    reopened = Spool(tmp_path, max_bytes=10_000, on_damage=damages)
    assert segment.stat().st_size == intact
    assert damages.seen == [("torn_tail", len(torn))]
    assert [r.getMessage() for r in caplog.records if "torn tail" in r.getMessage()] == [
        f"spool segment {segment}: torn tail cut at offset {intact} ({len(torn)} bytes;"
        " a crash mid-append)"
    ]
    reopened.append([b"after the restart"])
    assert read_all(reopened) == [b"r0", b"r1", b"after the restart"]
    assert not (tmp_path / "damaged").exists()  # a torn append holds nothing worth keeping
    reopened.close()


@pytest.mark.parametrize("damage", ["payload byte", "impossible length", "magic", "crc"])
def test_a_corrupt_middle_frame_is_moved_aside_and_the_frames_after_it_are_read(
    tmp_path: Path, damage: str
) -> None:
    payloads = [b"r0", b"r1", b"the damaged one", b"r3", b"r4"]
    segment = write_records(tmp_path, payloads)
    data = bytearray(segment.read_bytes())
    start = sum(len(encode_frame(p)) for p in payloads[:2])
    size = len(encode_frame(payloads[2]))
    original = bytes(data[start : start + size])
    at = {"payload byte": 14, "impossible length": 4, "magic": 0, "crc": 9}[damage]
    data[start + at] ^= 0x40
    segment.write_bytes(bytes(data))

    damages = Damages()
    spool = Spool(tmp_path, max_bytes=10_000, on_damage=damages)
    assert read_all(spool) == [b"r0", b"r1", b"r3", b"r4"]
    assert damages.seen == [("corrupt_frame", size)]  # once, though read again after restart
    kept = tmp_path / "damaged" / f"{segment.name.split('.')[0]}-{start}.bin"
    assert kept.read_bytes() == bytes(data[start : start + size]) != original
    spool.close()


def test_damage_appearing_after_start_is_moved_aside_too(tmp_path: Path) -> None:
    damages = Damages()
    spool = Spool(tmp_path, max_bytes=10_000, on_damage=damages)
    for payload in (b"r0", b"r1", b"r2"):
        spool.append([payload])
    spool.sync()
    (segment,) = tmp_path.glob("*.spool")
    with segment.open("r+b") as f:  # the disk changed r1 under the running spool
        f.seek(len(encode_frame(b"r0")) + 12)
        f.write(b"X")
    assert read_all(spool) == [b"r0", b"r2"]
    assert damages.seen == [("corrupt_frame", len(encode_frame(b"r1")))]
    spool.close()


def write_old_format(directory: Path, number: int, payloads: list[bytes]) -> Path:
    """A segment as the spool wrote them before checksums: ``length | payload``, no header."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{number:012d}.spool"
    path.write_bytes(b"".join(struct.pack(">I", len(p)) + p for p in payloads))
    return path


def test_segments_of_the_previous_format_are_still_read_then_new_ones_after_them(
    tmp_path: Path,
) -> None:
    first = write_old_format(tmp_path, 1, [b"old0", b"old1"])
    second = write_old_format(tmp_path, 2, [b"old2"])
    (tmp_path / "cursor").write_text(f"1 {4 + 4}")  # old0 was acknowledged before the upgrade
    with second.open("ab") as f:
        f.write(b"\x00\x00\x01\x00torn")  # the old format's torn tail is cut as well
    damages = Damages()
    spool = Spool(tmp_path, max_bytes=10_000, on_damage=damages)
    assert damages.seen == [("torn_tail", 8)]
    spool.append([b"new0"])
    # New records never go into an old-format segment: the version is in the file's name.
    assert sorted(p.name for p in tmp_path.glob("*.spool")) == [
        first.name, second.name, "000000000003.v2.spool",
    ]  # fmt: skip
    assert read_all(spool) == [b"old1", b"old2", b"new0"]
    assert not first.exists() and not second.exists()
    spool.close()


def test_a_restart_after_a_full_drain_reads_every_new_record(tmp_path: Path) -> None:
    # The drained segment is deleted but the cursor still points into its number: a new
    # segment reusing that number would be read from the stale offset, mid-frame.
    spool = Spool(tmp_path, max_bytes=10_000)
    for i in range(3):
        spool.append([b"drained %d" % i])
    assert len(read_all(spool)) == 3
    spool.close()
    reopened = Spool(tmp_path, max_bytes=10_000)
    for i in range(10):
        reopened.append([b"x%d" % i])
    assert read_all(reopened) == [b"x%d" % i for i in range(10)]
    reopened.close()


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=12),
    mutations=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    truncate=st.none() | st.integers(0, 10**6),
)
def test_random_corruption_never_raises_and_never_passes_for_a_record(
    payloads: list[bytes], mutations: list[tuple[int, int]], truncate: int | None
) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        segment = write_records(directory, payloads)
        data = bytearray(segment.read_bytes())
        for position, value in mutations:
            data[position % len(data)] = value
        if truncate is not None:
            del data[truncate % (len(data) + 1) :]
        segment.write_bytes(bytes(data))

        # A frame comes back exactly when its bytes were left alone, and nothing else does.
        expected, offset = [], 0
        for payload in payloads:
            frame = encode_frame(payload)
            if bytes(data[offset : offset + len(frame)]) == frame:
                expected.append(payload)
            offset += len(frame)
        spool = Spool(directory, max_bytes=10_000_000)
        assert read_all(spool) == expected
        spool.close()


def test_a_segment_shrunk_under_the_running_spool_does_not_leave_it_stuck(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    for payload in (b"r0", b"r1", b"r2"):
        spool.append([payload])
    spool.sync()
    (segment,) = tmp_path.glob("*.spool")
    with segment.open("r+b") as f:
        f.truncate(len(encode_frame(b"r0")) + 5)
    # The bytes it counted as pending are gone: it must notice, not wait for them forever.
    assert read_all(spool) == [b"r0"]
    assert spool.empty()
    spool.close()


# -- a full disk, and what must work on one ---------------------------------------------------


def test_a_full_disk_takes_what_fits_whole_and_takes_more_once_drained(tmp_path: Path) -> None:
    # A real filesystem of 1 MiB filled up, not a patched write.
    with small_filesystem(tmp_path / "disk", "1m") as disk:
        errors: list[tuple[str, int | None]] = []
        spool = Spool(
            disk / "spool",
            max_bytes=2**30,
            on_disk_error=lambda op, e: errors.append((op, e.errno)),
        )
        payloads = [b"%06d" % i + b"x" * 250 for i in range(10_000)]  # 2.6 MB: more than fits
        taken: list[bytes] = []
        for start in range(0, len(payloads), 700):
            chunk = payloads[start : start + 700]
            appended = spool.append(chunk)
            taken += chunk[: len(appended.positions)]
            if appended.refusal is not None:
                break
        assert appended.refusal is not None and appended.refusal.reason == DISK_ERROR
        assert "No space left on device" in appended.refusal.detail
        assert errors[0] == ("write", errno.ENOSPC)
        assert 3000 < len(taken) < 10_000
        # What it says it holds is what is on disk: whole frames, the one that did not fit cut.
        assert (
            spool.pending_bytes == segments_bytes(disk) == sum(map(len, map(encode_frame, taken)))
        )
        # Acknowledging works on the full disk: the cursor is rewritten in place.
        first, cursor = spool.read(100)
        spool.acknowledge(cursor)
        assert first == taken[:100]
        assert CursorFile(disk / "spool" / "cursor").load() == cursor
        assert not errors[1:], errors
        # Read to its end, the segment goes at once, and the disk takes new records.
        assert read_all(spool) == taken[100:]
        assert [p.name for p in (disk / "spool").iterdir()] == ["cursor"]
        assert len(spool.append(payloads[:1000]).positions) == 1000
        spool.close()


def test_records_acknowledged_out_of_order_are_passed_over(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    appended = spool.append([b"r0", b"r1", b"r2", b"r3"])
    # r1 and r2 were copies of a batch whose late acknowledgement came: never sent again.
    spool.acknowledge_records(appended.positions[1:3])
    assert read_all(spool) == [b"r0", b"r3"]
    assert spool.empty() and list(tmp_path.glob("*.spool")) == []
    spool.close()


def test_a_torn_cursor_makes_the_spool_read_again_rather_than_skip(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    spool.append([b"r0", b"r1", b"r2"])
    _, cursor = spool.read(1)
    spool.acknowledge(cursor)
    spool.close()
    line = (tmp_path / "cursor").read_bytes()
    assert len(line) == CURSOR_BYTES and CursorFile(tmp_path / "cursor").load() == cursor
    # A power loss mid-rewrite: the offset's digits changed, the checksum no longer matches.
    (tmp_path / "cursor").write_bytes(line.replace(b" %d " % cursor.offset, b" 99 ", 1))
    (tmp_path / "cursor.tmp").write_bytes(b"")  # what an older version left on a full disk
    reopened = Spool(tmp_path, max_bytes=10_000)
    assert read_all(reopened) == [b"r0", b"r1", b"r2"]  # sent twice, never skipped
    assert not (tmp_path / "cursor.tmp").exists()
    reopened.close()
