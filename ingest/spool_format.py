"""The spool's on-disk format, as pure functions: frames, segment names, the scanner.

A segment ``<n>.v2.spool`` holds checksummed frames

    magic (4 bytes, FRAME_MAGIC) | length (4, big-endian) | crc32 of length+payload (4) | payload

and ``<n>.spool`` the format before it (``length (4 bytes, big-endian) | payload``). The scanner
yields the frames of a segment's bytes and the ranges that are none (damage), so that the
spool (``ingest/spool.py``) can read past any damage.
"""

from __future__ import annotations

import mmap
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

# 0xFE never occurs in UTF-8, so the JSON events we spool cannot contain the marker.
FRAME_MAGIC: Final = b"\xfe\xedSP"
_HEAD: Final = struct.Struct(">4sII")  # magic, length, crc32(length + payload)
_LENGTH: Final = struct.Struct(">I")
CURRENT_VERSION: Final = 2
_SEGMENT_NAME: Final = re.compile(r"(\d+)(?:\.v(\d+))?\.spool")

Data: TypeAlias = bytes | mmap.mmap


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


def whole_frames(sizes: Iterable[int], written: int) -> int:
    """How many of frames of these sizes, in order, the first ``written`` bytes hold whole."""
    count = end = 0
    for size in sizes:
        if end + size > written:
            break
        end += size
        count += 1
    return count
