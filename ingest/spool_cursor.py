"""The spool's read position on disk: one fixed-size, checksummed line, rewritten in place.

In place rather than by writing a new file and renaming it: acknowledging must work on a full
disk (the very case the spool exists for), where the new file of a rename cannot be created,
while overwriting bytes a file already holds needs no free block. The checksum tells a torn
overwrite (a power loss mid-write) from a position: a line that does not check out is
ignored, and the spool is read again from its oldest segment (records sent twice, which the
projector's dedupe absorbs, rather than records skipped).
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger("ingest.spool")

CURSOR_BYTES: Final = 64


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in the spool: a segment's number and a byte offset in it."""

    segment: int
    offset: int


START: Final = Cursor(0, 0)


def encode_cursor(cursor: Cursor) -> bytes:
    """The cursor's line, padded to CURSOR_BYTES so that every rewrite covers the last one."""
    text = f"{cursor.segment} {cursor.offset}"
    line = f"{text} {zlib.crc32(text.encode()):08x}".encode()
    return line.ljust(CURSOR_BYTES - 1) + b"\n"


def decode_cursor(data: bytes) -> Cursor | None:
    """The cursor a line holds; None when it holds none (empty, torn or not a cursor).

    ``segment offset`` without a checksum is the line the spool wrote before (by rename, so
    never torn): still read, so that an upgrade does not send a whole spool again.
    """
    fields = data.decode("ascii", "replace").split()
    try:
        if len(fields) == 2:
            return Cursor(int(fields[0]), int(fields[1]))
        if len(fields) == 3:
            text = f"{int(fields[0])} {int(fields[1])}"
            if int(fields[2], 16) == zlib.crc32(text.encode()):
                return Cursor(int(fields[0]), int(fields[1]))
    except ValueError:
        pass
    return None


class CursorFile:
    """The ``cursor`` file of a spool folder, opened once and overwritten in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def load(self) -> Cursor:
        try:
            data = self.path.read_bytes()
        except OSError:
            return START  # none yet: everything in the folder is unread
        cursor = decode_cursor(data)
        if cursor is None and data.strip():
            logger.warning(
                "spool cursor %s unreadable (%r): reading the spool again from its oldest "
                "segment (records already sent are sent again; the projector's dedupe "
                "absorbs them)",
                self.path, data[:CURSOR_BYTES],
            )  # fmt: skip
        return START if cursor is None else cursor

    def store(self, cursor: Cursor) -> None:
        """Overwrite the position; OSError when the file cannot be opened or written."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.pwrite(self._fd, encode_cursor(cursor), 0)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
