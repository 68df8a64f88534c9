"""An append-only, bounded, rotated on-disk spool of messages the broker could not take yet.

Segments are files named by a growing sequence number. The file name carries the format
version (``ingest/spool_format.py``): ``<n>.v2.spool`` holds checksummed frames, ``<n>.spool``
the format before it, still read so that nothing spooled before an upgrade is lost; new
records always go to a v2 segment. The version lives in the name, not in a header, so that
no corruption of a file's bytes can make it read as the other format, and an older edge
ignores the new segments instead of misreading them.

Appends are written through (a process killed after ``append`` returned loses none of them)
and made durable by ``sync`` (fsync), which the publisher calls every
TRACKER_EDGE_SPOOL_SYNC_MS. Reading starts at a cursor (segment, byte offset) rewritten in
place after every acknowledged batch (``ingest/spool_cursor.py``), and every segment read to
its end is deleted at once. After a hard kill, a record whose acknowledgement was not yet
recorded is sent again: the projector's dedupe absorbs it.

The disk failing is never an exception. ``append`` writes what the bound (``max_bytes``) and
the disk allow, cuts a frame the disk took only part of, and says how many it wrote and why
it stopped (:class:`Refusal`); a failed fsync, rotation, cursor write or read is reported
through ``on_disk_error(operation, error)`` and the spool goes on (a cursor that could not
be written is kept in memory and written with the next acknowledgement).

Damage never stops the reader. At start-up every unacknowledged segment is checked: a torn
or corrupt tail (nothing valid after it: a crash mid-append) is cut off; corrupt bytes with
valid frames after them are copied to ``damaged/<segment>-<offset>.bin`` for inspection and
skipped, the reader resuming at the next frame whose magic and checksum hold. Damage found
later (the disk changed under us) is moved aside the same way. Each is logged and reported
through ``on_damage(kind, bytes)``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

from ingest.spool_cursor import Cursor, CursorFile
from ingest.spool_format import (
    CURRENT_VERSION,
    Damage,
    Data,
    encode_frame,
    parse_segment_name,
    scan,
    segment_name,
    whole_frames,
)

logger = logging.getLogger(__name__)

SEGMENT_BYTES: Final = 64 * 2**20

# Why an append stopped short (also the reasons the publisher counts dropped events under).
SPOOL_FULL: Final = "spool_full"
DISK_ERROR: Final = "disk_error"

TORN_TAIL: Final = "torn_tail"
CORRUPT_FRAME: Final = "corrupt_frame"
BAD_RECORD: Final = "bad_record"

DamageHandler: TypeAlias = Callable[[str, int], None]
DiskErrorHandler: TypeAlias = Callable[[str, OSError], None]


@dataclass(frozen=True, slots=True)
class Record:
    """A spooled payload and where it lies, so that a bad one can be moved aside."""

    segment: int
    offset: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Segment:
    number: int
    version: int
    path: Path


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the spool took fewer payloads than it was given: SPOOL_FULL or DISK_ERROR."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append wrote: where each payload written lies (the first ``len(positions)``
    given, in order), and why it stopped short of the others, if it did."""

    positions: list[Cursor]
    refusal: Refusal | None


# -- the spool ----------------------------------------------------------------------------------


def _ignore_damage(kind: str, size: int) -> None:
    pass


def _log_disk_error(operation: str, error: OSError) -> None:
    logger.error("spool %s failed: %s", operation, error)


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = SEGMENT_BYTES,
        on_damage: DamageHandler = _ignore_damage,
        on_disk_error: DiskErrorHandler = _log_disk_error,
    ):
        self.directory = directory
        self.quarantine_dir = directory / "damaged"
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._on_damage = on_damage
        self._on_disk_error = on_disk_error
        # (segment, offset) of damage already moved aside: a re-read does not count it again.
        self._moved_aside: set[tuple[int, int]] = set()
        # Records acknowledged out of order (ahead of the cursor): the reader passes over them.
        self._done: set[Cursor] = set()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # appends fail, and say so, until it can be made
            on_disk_error("mkdir", e)
        with contextlib.suppress(OSError):
            (directory / "cursor.tmp").unlink(missing_ok=True)  # left by versions that renamed
        self._cursor_file = CursorFile(directory / "cursor")
        self._cursor = self._cursor_file.load()
        try:  # made now, while the disk has room: rewriting it later needs none
            self._cursor_file.store(self._cursor)
        except OSError as e:  # retried at each acknowledgement
            on_disk_error("cursor", e)
        self._check_segments()
        segments = self._segments()
        # Always a fresh segment: never append v2 frames to an old-format file, and never
        # reuse the number of a drained (deleted) segment the cursor still points into.
        last = max([self._cursor.segment, *(s.number for s in self._all_segments())])
        self._write_segment = last + 1
        self._fd: int | None = None  # the write segment, opened at the first append
        self._write_end = 0  # its length
        self._dirty = False
        self._size = sum(max(_size_of(s.path) - self._start(s), 0) for s in segments)

    # -- state --------------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes on disk not yet acknowledged."""
        return max(self._size, 0)

    @property
    def cursor(self) -> Cursor:
        """Where the next read starts."""
        return self._cursor

    def empty(self) -> bool:
        return self.pending_bytes == 0

    def full(self) -> bool:
        return self.pending_bytes >= self.max_bytes

    def _segments(self) -> list[Segment]:
        """The segments this version reads, oldest first."""
        return [s for s in self._all_segments() if s.version <= CURRENT_VERSION]

    def _all_segments(self) -> list[Segment]:
        found = []
        for path in self.directory.glob("*.spool"):
            parsed = parse_segment_name(path.name)
            if parsed is not None:
                found.append(Segment(parsed[0], parsed[1], path))
        return sorted(found, key=lambda s: s.number)

    def _start(self, segment: Segment) -> int:
        """Where the unacknowledged bytes of ``segment`` begin."""
        return self._cursor.offset if segment.number == self._cursor.segment else 0

    # -- the start-up check -------------------------------------------------------------------

    def _check_segments(self) -> None:
        """Cut torn tails and move corrupt frames aside in every unacknowledged segment."""
        for segment in self._all_segments():
            if segment.version > CURRENT_VERSION:
                # Written by a newer edge (a rollback): left untouched for it, never misread.
                logger.error("spool segment %s has a format this version cannot read", segment.path)
                continue
            try:
                self._check_segment(segment)
            except OSError as e:  # the reader reports it again when it gets there
                self._on_disk_error("check", e)

    def _check_segment(self, segment: Segment) -> None:
        if segment.number < self._cursor.segment:
            segment.path.unlink()  # acknowledged; a crash came before its deletion
            return
        start = self._start(segment)
        cut: Damage | None = None
        with _mapped(segment.path) as data:
            for item in scan(data, start, segment.version):
                if isinstance(item, Damage):
                    if item.torn:
                        cut = item
                    else:
                        self._move_aside(segment, item, data)
        if cut is not None:
            self._cut_tail(segment, cut)
        if segment.path.stat().st_size <= start:
            segment.path.unlink()  # nothing unacknowledged left in it

    def _cut_tail(self, segment: Segment, damage: Damage) -> None:
        with segment.path.open("r+b") as f:
            f.truncate(damage.offset)
            os.fsync(f.fileno())
        size = damage.end - damage.offset
        logger.warning(
            "spool segment %s: torn tail cut at offset %d (%d bytes; a crash mid-append)",
            segment.path, damage.offset, size,
        )  # fmt: skip
        self._on_damage(TORN_TAIL, size)

    def _move_aside(self, segment: Segment, damage: Damage, data: Data) -> None:
        if (segment.number, damage.offset) in self._moved_aside:
            return
        self._moved_aside.add((segment.number, damage.offset))
        size = damage.end - damage.offset
        target = self._keep(segment.number, damage.offset, data[damage.offset : damage.end])
        logger.error(
            "spool segment %s: %d corrupt bytes at offset %d skipped, kept in %s",
            segment.path, size, damage.offset, target,
        )  # fmt: skip
        self._on_damage(CORRUPT_FRAME, size)

    def quarantine(self, record: Record, reason: str) -> None:
        """Move aside a record that its reader cannot use; the cursor passes it like any."""
        if (record.segment, record.offset) in self._moved_aside:
            return
        self._moved_aside.add((record.segment, record.offset))
        target = self._keep(record.segment, record.offset, record.payload)
        logger.error(
            "spool segment %d: record at offset %d (%d bytes) is unusable (%s), kept in %s",
            record.segment, record.offset, len(record.payload), reason, target,
        )  # fmt: skip
        self._on_damage(BAD_RECORD, len(record.payload))

    def _keep(self, segment: int, offset: int, content: bytes) -> Path | None:
        """Save damaged bytes where ops can inspect them; failing that, say so and go on."""
        target = self.quarantine_dir / f"{segment:012d}-{offset}.bin"
        try:
            self.quarantine_dir.mkdir(exist_ok=True)
            target.write_bytes(content)
        except OSError:
            logger.exception("could not keep damaged spool bytes in %s", target)
            return None
        return target

    # -- writing ------------------------------------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> Appended:
        """Write ``payloads`` in order, as many as the bound and the disk take; never raises.

        Each is written through before this returns (a killed process keeps it; fsync at the
        next ``sync``). A payload is taken while the spool holds less than ``max_bytes``.
        """
        positions: list[Cursor] = []
        while len(positions) < len(payloads):
            if self._size >= self.max_bytes:
                detail = f"{self.pending_bytes} bytes pending, the bound is {self.max_bytes}"
                return Appended(positions, Refusal(SPOOL_FULL, detail))
            if self._fd is None or self._write_end >= self.segment_bytes:
                error = self._rotate()
                if error is not None:
                    return Appended(positions, Refusal(DISK_ERROR, f"new segment: {error}"))
            written, error = self._write(self._frames(payloads[len(positions) :]))
            positions += written
            if error is not None:
                return Appended(positions, Refusal(DISK_ERROR, f"write: {error}"))
        return Appended(positions, None)

    def _frames(self, payloads: Sequence[bytes]) -> list[bytes]:
        """The frames of the first payloads that go into the current segment: one at least,
        more while the spool stays under its bound and the segment under its size."""
        frames: list[bytes] = []
        total = 0
        for payload in payloads:
            if frames and (
                self._size + total >= self.max_bytes
                or self._write_end + total >= self.segment_bytes
            ):
                break
            frames.append(encode_frame(payload))
            total += len(frames[-1])
        return frames

    def _write(self, frames: list[bytes]) -> tuple[list[Cursor], OSError | None]:
        """Write frames to the current segment: where those written whole lie, and the error
        that stopped the others. A frame the disk took only part of is cut off again."""
        assert self._fd is not None
        data = memoryview(b"".join(frames))
        done = 0
        error: OSError | None = None
        try:
            while done < len(data):
                n = os.write(self._fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
        except OSError as e:
            error = e
            self._on_disk_error("write", e)
        count = whole_frames(map(len, frames), done)
        positions, end = [], 0
        for frame in frames[:count]:
            positions.append(Cursor(self._write_segment, self._write_end + end))
            end += len(frame)
        kept = end
        if done > end:
            try:
                os.ftruncate(self._fd, self._write_end + end)
            except OSError as e:
                # The partial frame stays: the reader passes it as damage. No frame may follow
                # it in this segment, so the next append starts a new one.
                self._on_disk_error("truncate", e)
                kept = done
                self._close_writer()
                self._write_segment += 1
        self._write_end += kept
        self._size += kept
        self._dirty = self._dirty or end > 0
        return positions, error

    def _path(self, segment: int) -> Path:
        return self.directory / segment_name(segment)

    def _rotate(self) -> OSError | None:
        if self._fd is not None:
            self._sync_writer()
            self._close_writer()
            self._write_segment += 1
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(self._path(self._write_segment), flags, 0o644)
            self._write_end = os.fstat(self._fd).st_size
        except OSError as e:
            self._on_disk_error("rotate", e)
            self._close_writer()
            return e
        return None

    def _sync_writer(self) -> None:
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as e:  # retried at the next sync; the bytes stay readable meanwhile
            self._on_disk_error("sync", e)
            return
        self._dirty = False

    def _close_writer(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as e:
                self._on_disk_error("close", e)

    def sync(self) -> None:
        """Make every append so far durable."""
        if self._dirty and self._fd is not None:
            self._sync_writer()

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            self._close_writer()
        try:
            self._cursor_file.close()
        except OSError as e:
            self._on_disk_error("close", e)

    # -- reading ------------------------------------------------------------------------------

    def read(self, max_records: int) -> tuple[list[bytes], Cursor]:
        """Up to ``max_records`` oldest unacknowledged payloads, and the cursor after them."""
        records, cursor = self.read_records(max_records)
        return [r.payload for r in records], cursor

    def read_records(self, max_records: int) -> tuple[list[Record], Cursor]:
        """Up to ``max_records`` oldest unacknowledged records, and the cursor after them.

        Damage on the way is moved aside and passed, and so are records acknowledged out of
        order: the cursor goes beyond them. A segment that cannot be read is reported; the
        records before it come back, and the cursor stops there.
        """
        records: list[Record] = []
        cursor = self._cursor
        pending = 0
        done = self._done
        for segment in self._segments():
            if segment.number < cursor.segment:
                continue
            start = self._start(segment)
            end = start
            try:
                with _mapped(segment.path) as data:
                    pending += max(len(data) - start, 0)
                    for item in scan(data, start, segment.version):
                        end = item.end
                        if isinstance(item, Damage):
                            self._move_aside(segment, item, data)
                            continue
                        if done and Cursor(segment.number, item.offset) in done:
                            continue
                        records.append(Record(segment.number, item.offset, item.payload))
                        if len(records) >= max_records:
                            return records, Cursor(segment.number, end)
            except OSError as e:
                self._on_disk_error("read", e)
                return records, Cursor(segment.number, end)
            cursor = Cursor(segment.number, end)
        # Read to the end: recount what is pending from the files themselves, so that a count
        # gone wrong (a file changed under us) cannot leave bytes no read ever passes, which
        # would keep the publisher reading nothing, forever.
        self._size = pending
        return records, cursor

    def acknowledge(self, cursor: Cursor) -> None:
        """Everything before ``cursor`` reached the broker: record it, and delete at once every
        segment read to its end."""
        consumed = 0
        finished: list[Segment] = []
        for segment in self._segments():
            if segment.number > cursor.segment:
                break
            start, size = self._start(segment), _size_of(segment.path)
            if segment.number < cursor.segment:
                consumed += max(size - start, 0)
                finished.append(segment)
            else:
                consumed += max(cursor.offset - start, 0)
                if cursor.offset >= size:
                    finished.append(segment)
        self._cursor = cursor
        self._size -= consumed
        if self._done:
            self._done = {p for p in self._done if p >= cursor}
        try:
            self._cursor_file.store(cursor)
        except OSError as e:  # kept in memory, written with the next acknowledgement
            self._on_disk_error("cursor", e)
        if self._fd is not None and cursor >= Cursor(self._write_segment, self._write_end):
            # Fully drained: the next append starts a fresh segment, so this one can go now.
            self._close_writer()
            self._write_segment += 1
            self._size = 0
        for segment in finished:
            if segment.number < self._write_segment:  # never the one being written
                try:
                    segment.path.unlink(missing_ok=True)
                except OSError as e:
                    self._on_disk_error("remove", e)

    def acknowledge_records(self, positions: Iterable[Cursor]) -> None:
        """Records that reached the broker out of order (copies spooled while their batch was
        in flight, acknowledged late): the reader passes over them. Kept in memory only:
        after a restart they are sent again, and the projector's dedupe absorbs them."""
        self._done.update(p for p in positions if p >= self._cursor)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[Data]:
    """A segment's bytes, mapped read-only: a batch read touches only the pages it scans."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield b""  # mmap refuses empty files
            return
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as data:
            yield data
