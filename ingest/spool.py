"""An append-only, bounded, rotated on-disk spool of messages the broker could not take yet.

Segments are files named by a growing sequence number. The file name carries the format
version: ``<n>.v2.spool`` holds checksummed frames

    magic (4 bytes, FRAME_MAGIC) | length (4, big-endian) | crc32 of length+payload (4) | payload

and ``<n>.spool`` is the format before it (``length (4 bytes, big-endian) | payload``), still
read so that nothing spooled before an upgrade is lost; new records always go to a v2
segment. The version lives in the name, not in a header, so that no corruption of a file's
bytes can make it read as the other format, and an older edge ignores the new segments
instead of misreading them.

Appends are buffered and made durable by ``sync`` (fsync), which the publisher calls every
TRACKER_EDGE_SPOOL_SYNC_MS. Reading starts at a cursor (segment, byte offset) persisted by
atomic rename after every acknowledged batch, and finished segments are deleted. After a
hard kill, a record whose acknowledgement was not yet recorded is sent again: the
projector's dedupe absorbs it.

Damage never stops the reader. At start-up every unacknowledged segment is checked: a torn
or corrupt tail (nothing valid after it: a crash mid-append) is cut off; corrupt bytes with
valid frames after them are copied to ``damaged/<segment>-<offset>.bin`` for inspection and
skipped, the reader resuming at the next frame whose magic and checksum hold. Damage found
later (the disk changed under us) is moved aside the same way. Each is logged and reported
through ``on_damage(kind, bytes)``.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TypeAlias

logger = logging.getLogger(__name__)

SEGMENT_BYTES: Final = 64 * 2**20
# 0xFE never occurs in UTF-8, so the JSON events we spool cannot contain the marker.
FRAME_MAGIC: Final = b"\xfe\xedSP"
_HEAD: Final = struct.Struct(">4sII")  # magic, length, crc32(length + payload)
_LENGTH: Final = struct.Struct(">I")
CURRENT_VERSION: Final = 2
_SEGMENT_NAME: Final = re.compile(r"(\d+)(?:\.v(\d+))?\.spool")

TORN_TAIL: Final = "torn_tail"
CORRUPT_FRAME: Final = "corrupt_frame"
BAD_RECORD: Final = "bad_record"

Data: TypeAlias = bytes | mmap.mmap
DamageHandler: TypeAlias = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class Cursor:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Frame:
    offset: int
    end: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes ``[offset, end)`` that are no frame; ``torn`` when no valid frame follows."""

    offset: int
    end: int
    torn: bool


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


class SpoolFull(Exception):
    """The spool reached its size bound; the caller counts and logs the loss."""


# -- the format (pure) --------------------------------------------------------------------------


def encode_frame(payload: bytes) -> bytes:
    length = _LENGTH.pack(len(payload))
    return FRAME_MAGIC + length + _LENGTH.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


def segment_name(number: int, version: int = CURRENT_VERSION) -> str:
    return f"{number:012d}.spool" if version == 1 else f"{number:012d}.v{version}.spool"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(number, version) of a segment file name, None for any other file."""
    match = _SEGMENT_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match[1]), int(match[2] or 1)


def scan(data: Data, start: int, version: int) -> Iterator[Frame | Damage]:
    """The frames and the damaged ranges of a segment's bytes from ``start``, in order."""
    return _scan_v2(data, start) if version >= 2 else _scan_v1(data, start)


def _frame_at(data: Data, at: int) -> Frame | None:
    """The intact v2 frame starting at ``at``, if there is one."""
    if at + _HEAD.size > len(data):
        return None
    magic, length, crc = _HEAD.unpack_from(data, at)
    end = at + _HEAD.size + length
    if magic != FRAME_MAGIC or end > len(data):
        return None
    payload = data[at + _HEAD.size : end]
    if zlib.crc32(payload, zlib.crc32(data[at + 4 : at + 8])) != crc:
        return None
    return Frame(at, end, payload)


def _next_frame(data: Data, start: int) -> int | None:
    """Where the next intact v2 frame at or after ``start`` begins."""
    at = data.find(FRAME_MAGIC, start)
    while at != -1:
        if _frame_at(data, at) is not None:
            return at
        at = data.find(FRAME_MAGIC, at + 1)
    return None


def _scan_v2(data: Data, start: int) -> Iterator[Frame | Damage]:
    position, size = start, len(data)
    while position < size:
        frame = _frame_at(data, position)
        if frame is not None:
            yield frame
            position = frame.end
            continue
        resume = _next_frame(data, position + 1)
        if resume is None:
            yield Damage(position, size, torn=True)
            return
        yield Damage(position, resume, torn=False)
        position = resume


def _scan_v1(data: Data, start: int) -> Iterator[Frame | Damage]:
    # No checksum and no marker: nothing to resynchronise on, only a tail can be told torn.
    position, size = start, len(data)
    while position < size:
        if position + _LENGTH.size > size:
            yield Damage(position, size, torn=True)
            return
        (length,) = _LENGTH.unpack_from(data, position)
        end = position + _LENGTH.size + length
        if end > size:
            yield Damage(position, size, torn=True)
            return
        yield Frame(position, end, data[position + _LENGTH.size : end])
        position = end


# -- the spool ----------------------------------------------------------------------------------


def _ignore_damage(kind: str, size: int) -> None:
    pass


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = SEGMENT_BYTES,
        on_damage: DamageHandler = _ignore_damage,
    ):
        self.directory = directory
        self.quarantine_dir = directory / "damaged"
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._on_damage = on_damage
        # (segment, offset) of damage already moved aside: a re-read does not count it again.
        self._moved_aside: set[tuple[int, int]] = set()
        directory.mkdir(parents=True, exist_ok=True)
        self._cursor = self._load_cursor()
        self._check_segments()
        segments = self._segments()
        # Always a fresh segment: never append v2 frames to an old-format file, and never
        # reuse the number of a drained (deleted) segment the cursor still points into.
        last = max([self._cursor.segment, *(s.number for s in self._all_segments())])
        self._write_segment = last + 1
        self._writer: BinaryIO | None = None
        self._dirty = False
        self._size = sum(s.path.stat().st_size - self._start(s) for s in segments)

    # -- state --------------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes appended and not yet acknowledged."""
        return max(self._size, 0)

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

    def _load_cursor(self) -> Cursor:
        path = self.directory / "cursor"
        try:
            segment, offset = path.read_text().split()
            return Cursor(int(segment), int(offset))
        except (OSError, ValueError):
            return Cursor(0, 0)

    # -- the start-up check -------------------------------------------------------------------

    def _check_segments(self) -> None:
        """Cut torn tails and move corrupt frames aside in every unacknowledged segment."""
        for segment in self._all_segments():
            if segment.version > CURRENT_VERSION:
                # Written by a newer edge (a rollback): left untouched for it, never misread.
                logger.error("spool segment %s has a format this version cannot read", segment.path)
                continue
            if segment.number < self._cursor.segment:
                segment.path.unlink()  # acknowledged; a crash came before its deletion
                continue
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

    def append(self, payload: bytes) -> None:
        if self.full():
            raise SpoolFull(f"spool {self.directory} holds {self.pending_bytes} bytes")
        if self._writer is None or self._writer.tell() >= self.segment_bytes:
            self._rotate()
        assert self._writer is not None
        frame = encode_frame(payload)
        self._writer.write(frame)
        self._size += len(frame)
        self._dirty = True

    def _path(self, segment: int) -> Path:
        return self.directory / segment_name(segment)

    def _rotate(self) -> None:
        if self._writer is not None:
            self._sync_writer()
            self._writer.close()
            self._write_segment += 1
        self._writer = self._path(self._write_segment).open("ab")

    def _sync_writer(self) -> None:
        assert self._writer is not None
        self._writer.flush()
        os.fsync(self._writer.fileno())

    def sync(self) -> None:
        """Make every append so far durable."""
        if self._dirty and self._writer is not None:
            self._sync_writer()
            self._dirty = False

    def close(self) -> None:
        if self._writer is not None:
            self.sync()
            self._writer.close()
            self._writer = None

    # -- reading ------------------------------------------------------------------------------

    def read(self, max_records: int) -> tuple[list[bytes], Cursor]:
        """Up to ``max_records`` oldest unacknowledged payloads, and the cursor after them."""
        records, cursor = self.read_records(max_records)
        return [r.payload for r in records], cursor

    def read_records(self, max_records: int) -> tuple[list[Record], Cursor]:
        """Up to ``max_records`` oldest unacknowledged records, and the cursor after them.

        Damage on the way is moved aside and passed: the cursor goes beyond it.
        """
        self.sync()  # what we hand out must be what survives a crash
        records: list[Record] = []
        cursor = self._cursor
        pending = 0
        for segment in self._segments():
            if segment.number < cursor.segment:
                continue
            start = self._start(segment)
            end = start
            with _mapped(segment.path) as data:
                pending += max(len(data) - start, 0)
                for item in scan(data, start, segment.version):
                    end = item.end
                    if isinstance(item, Damage):
                        self._move_aside(segment, item, data)
                        continue
                    records.append(Record(segment.number, item.offset, item.payload))
                    if len(records) >= max_records:
                        return records, Cursor(segment.number, end)
            cursor = Cursor(segment.number, end)
        # Read to the end: recount what is pending from the files themselves, so that a count
        # gone wrong (a file changed under us) cannot leave bytes no read ever passes, which
        # would keep the publisher reading nothing, forever.
        self._size = pending
        return records, cursor

    def acknowledge(self, cursor: Cursor) -> None:
        """Everything before ``cursor`` reached the broker: persist it, drop finished files."""
        consumed = 0
        for segment in self._segments():
            if segment.number > cursor.segment:
                break
            start = self._start(segment)
            if segment.number < cursor.segment:
                consumed += max(segment.path.stat().st_size - start, 0)
                if segment.number != self._write_segment:
                    segment.path.unlink()
            else:
                consumed += cursor.offset - start
        self._cursor = cursor
        self._size -= consumed
        tmp = self.directory / "cursor.tmp"
        tmp.write_text(f"{cursor.segment} {cursor.offset}")
        os.replace(tmp, self.directory / "cursor")
        if self._size <= 0 and self._writer is not None and cursor.segment == self._write_segment:
            # Fully drained: start a fresh segment so the old one can go.
            self._writer.close()
            self._writer = None
            self._path(self._write_segment).unlink(missing_ok=True)
            self._write_segment += 1
            self._size = 0


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
