"""Typed, versioned events that the edge publishes and the projector consumes.

One definition shared by both services. Events travel as orjson-encoded JSON objects; every
object carries ``v`` (the schema version) so that a consumer can refuse what it does not know
instead of misreading it. Amounts travel as canonical decimal strings, never floats.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final, Literal

import orjson

SALE_SCHEMA_VERSION: Final = 1

SaleSource = Literal["pixel", "api"]
SaleStatus = Literal["accepted", "rejected"]


class EventDecodeError(ValueError):
    """A message is not a valid event of a known version; the message says why."""


@dataclass(frozen=True, slots=True)
class SaleCall:
    """One call of the sale pixel or of the server-to-server API, accepted or rejected.

    ``amount`` is the canonical decimal (``"12.50"``) when accepted and ``""`` when rejected;
    ``amount_raw`` is what the caller sent, kept so that ops can see why a call was refused.
    """

    event_id: str
    received_at_ms: int
    source: SaleSource
    status: SaleStatus
    reason: str
    universe: str
    transaction_id: str
    amount: str
    amount_raw: str
    currency: str
    customer_id: str
    click_id: str
    v: int = SALE_SCHEMA_VERSION

    def kafka_key(self) -> bytes:
        """Key so that every call of one transaction lands in one partition, in order.

        Duplicates must meet in one partition for the projector to decide "first call wins"
        without coordination; a call without a transaction id is unique by its event id.
        """
        return f"{self.universe}\x1f{self.transaction_id or self.event_id}".encode()


_SALE_FIELDS: Final = {f.name: f.type for f in fields(SaleCall)}
_STR_FIELDS: Final = tuple(name for name, kind in _SALE_FIELDS.items() if kind == "str")


def encode(event: SaleCall) -> bytes:
    return orjson.dumps(event)


def decode_sale(payload: bytes | None) -> SaleCall:
    """Decode and validate one sale call; raise :class:`EventDecodeError` with the reason."""
    if payload is None:
        raise EventDecodeError("empty message")
    try:
        data: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise EventDecodeError(f"not JSON: {e}") from e
    if not isinstance(data, dict):
        raise EventDecodeError("not a JSON object")
    version = data.get("v")
    if version != SALE_SCHEMA_VERSION:
        raise EventDecodeError(f"unsupported sale schema version {version!r}")
    missing = _SALE_FIELDS.keys() - data.keys()
    if missing:
        raise EventDecodeError(f"missing fields: {', '.join(sorted(missing))}")
    for name in _STR_FIELDS:
        if not isinstance(data[name], str):
            raise EventDecodeError(f"field {name} must be a string")
    if not isinstance(data["received_at_ms"], int) or isinstance(data["received_at_ms"], bool):
        raise EventDecodeError("field received_at_ms must be an integer")
    if data["source"] not in ("pixel", "api"):
        raise EventDecodeError(f"unknown source {data['source']!r}")
    if data["status"] not in ("accepted", "rejected"):
        raise EventDecodeError(f"unknown status {data['status']!r}")
    return SaleCall(**{name: data[name] for name in _SALE_FIELDS})
