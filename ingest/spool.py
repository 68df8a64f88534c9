"""An append-only, bounded, rotated on-disk spool of messages the broker could not take yet.

Segments are files named by a growing sequence number; each record is framed as
``length (4 bytes, big-endian) | payload``. Appends are buffered and made durable by
``sync`` (fsync), which the publisher calls every TRACKER_EDGE_SPOOL_SYNC_MS. Reading
starts at a cursor (segment, byte offset) persisted by atomic rename after every
acknowledged batch, and finished segments are deleted. After a hard kill, a record whose
acknowledgement was not yet recorded is sent again: the projector's dedupe absorbs it.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

logger = logging.getLogger(__name__)

_FRAME: Final = struct.Struct(">I")
SEGMENT_BYTES: Final = 64 * 2**20


@dataclass(frozen=True, slots=True)
class Cursor:
    segment: int
    offset: int


class SpoolFull(Exception):
    """The spool reached its size bound; the caller counts and logs the loss."""


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = SEGMENT_BYTES):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._cursor = self._load_cursor()
        segments = self._segments()
        self._write_segment = segments[-1] if segments else max(self._cursor.segment, 1)
        self._writer: BinaryIO | None = None
        self._dirty = False
        self._size = sum(self._path(s).stat().st_size for s in segments) - (
            self._cursor.offset if self._cursor.segment in segments else 0
        )

    # -- state --------------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes appended and not yet acknowledged."""
        return max(self._size, 0)

    def empty(self) -> bool:
        return self.pending_bytes == 0

    def full(self) -> bool:
        return self.pending_bytes >= self.max_bytes

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.spool"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.spool") if p.stem.isdigit())

    def _load_cursor(self) -> Cursor:
        path = self.directory / "cursor"
        try:
            segment, offset = path.read_text().split()
            return Cursor(int(segment), int(offset))
        except (OSError, ValueError):
            return Cursor(0, 0)

    # -- writing ------------------------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        if self.full():
            raise SpoolFull(f"spool {self.directory} holds {self.pending_bytes} bytes")
        if self._writer is None or self._writer.tell() >= self.segment_bytes:
            self._rotate()
        assert self._writer is not None
        self._writer.write(_FRAME.pack(len(payload)) + payload)
        self._size += _FRAME.size + len(payload)
        self._dirty = True

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
        """Up to ``max_records`` oldest unacknowledged records, and the cursor after them."""
        self.sync()  # what we hand out must be what survives a crash
        records: list[bytes] = []
        cursor = self._cursor
        for segment in self._segments():
            if segment < cursor.segment:
                continue
            start = cursor.offset if segment == cursor.segment else 0
            end = start
            for payload, end in self._frames(self._path(segment), start):
                records.append(payload)
                if len(records) >= max_records:
                    return records, Cursor(segment, end)
            cursor = Cursor(segment, end)
        return records, cursor

    @staticmethod
    def _frames(path: Path, start: int) -> Iterator[tuple[bytes, int]]:
        with path.open("rb") as f:
            f.seek(start)
            position = start
            while True:
                header = f.read(_FRAME.size)
                if len(header) < _FRAME.size:
                    return  # end, or a frame torn by a crash mid-append: not acknowledged
                (length,) = _FRAME.unpack(header)
                payload = f.read(length)
                if len(payload) < length:
                    return
                position += _FRAME.size + length
                yield payload, position

    def acknowledge(self, cursor: Cursor) -> None:
        """Everything before ``cursor`` reached the broker: persist it, drop finished files."""
        consumed = 0
        for segment in self._segments():
            if segment > cursor.segment:
                break
            start = self._cursor.offset if segment == self._cursor.segment else 0
            if segment < cursor.segment:
                consumed += self._path(segment).stat().st_size - start
                if segment != self._write_segment:
                    self._path(segment).unlink()
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
