"""A message as the publisher queues, spools and sends it, and its packed form in the spool."""

from __future__ import annotations

import struct

import msgspec

_HEADER = struct.Struct(">HI")


# One is made per pixel call: a frozen Struct is built in C (0.07 us; the frozen dataclass it
# replaced went through object.__setattr__ per field, 0.4 us). Its fields are str and bytes,
# which cannot form reference cycles, so the collector need not track it (gc=False).
class Message(msgspec.Struct, frozen=True, gc=False):
    topic: str
    key: bytes
    value: bytes

    def pack(self) -> bytes:
        topic = self.topic.encode()
        return _HEADER.pack(len(topic), len(self.key)) + topic + self.key + self.value

    @classmethod
    def unpack(cls, data: bytes) -> Message:
        """The message ``pack`` made; ValueError when ``data`` cannot be one."""
        if len(data) < _HEADER.size:
            raise ValueError(f"{len(data)} bytes, shorter than a message header")
        topic_length, key_length = _HEADER.unpack_from(data)
        start = _HEADER.size
        value_start = start + topic_length + key_length
        if value_start > len(data):
            raise ValueError(f"header claims {value_start} bytes, {len(data)} present")
        topic = data[start : start + topic_length].decode()
        return cls(topic, data[start + topic_length : value_start], data[value_start:])
