"""What the edge publishes since schema version 2: each call and click as it was received.

The edge answers and publishes; it does not interpret. The projector reads these events with
the rules of ``schemas/rules.py``, so a rule that changes (a new amount format, a longer id,
a parser bug fixed) reaches history through ``python -m projector rebuild``: a call
rejected yesterday is counted tomorrow without the merchant sending anything again.
Logs written before (schema version 1: the edge's typed reading, ``schemas/events.py``) are
still read as they are.

Bounded: a query or cookie header longer than the limits below is published cut to them and
marked in ``too_long``; the projector rejects such a call as ``too_long``. Nothing a client
sends makes a large Kafka message.
"""

from __future__ import annotations

from typing import Final, Literal, TypeVar

import msgspec

from schemas.events import KEY_SEPARATOR

RAW_SCHEMA_VERSION: Final = 2
QUERY_MAX: Final = 4096
COOKIES_MAX: Final = 4096

RawSource = Literal["pixel", "api"]


# Tagged: every message carries "v": 2 (written first), and a message of another version is
# refused by the decoder instead of misread.
class SaleRequest(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="v", tag=2
):
    """One call of the sale pixel or one sale object of the server-to-server API, as received.

    Pixel: ``query`` is the query string as sent (percent-encoding and all) and ``cookies``
    our own ``trk_*`` cookies (``name=value; ...``). API: ``fields`` holds the sale object's
    fields (a JSON number as its exact text; ``universe`` filled in from the API key when
    absent) and ``problem`` what the edge refused in its shape (``duplicate_field``,
    ``amount_not_string``, ``universe_not_allowed``, ...). ``problem`` is also set for a
    pixel request line the HTTP parser refused (``malformed_request``).
    """

    event_id: str
    received_at_ms: int
    source: RawSource
    query: str = ""
    cookies: str = ""
    fields: dict[str, str] = {}
    problem: str = ""
    too_long: str = ""  # "query" or "cookies": cut at the edge, rejected as too_long
    client_hash: str = ""


class ClickRequest(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="v", tag=2
):
    """A followed tracked link: the ``/click`` query as received (the edge verified its
    signature before redirecting), the click id it put in the cookie, and when."""

    event_id: str
    clicked_at_ms: int
    query: str
    client_hash: str = ""


# A refund is its own event kind, told apart by ``v`` as every event of the sales topic is: a
# consumer that knows only sales (an older projector included) refuses it as an unknown
# version instead of reading its ``id`` and ``amount`` as a sale.
class RefundRequest(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="v", tag=3
):
    """One refund object of ``POST /v1/refunds``, as received.

    ``fields`` holds the object's known fields as strings (``id`` the refunded transaction,
    ``refund_id``, ``amount`` as its exact text, ``currency``; ``universe`` filled in from the
    API key when absent) and ``problem`` what the edge refused in its shape. Keyed like the
    sale it refunds (universe, transaction id), so both are in one partition, in log order.
    """

    event_id: str
    received_at_ms: int
    fields: dict[str, str] = {}
    problem: str = ""
    client_hash: str = ""


def kafka_key(universe: str, unique: str) -> bytes:
    """Every call of one transaction in one partition: ``unique`` is its id (or the event id).

    The same key as version 1 events, so old and new calls of one transaction still meet.
    """
    return f"{universe}{KEY_SEPARATOR}{unique}".encode()


R = TypeVar("R", SaleRequest, ClickRequest, RefundRequest)

_ENCODER: Final = msgspec.json.Encoder()
_SALE_DECODER: Final = msgspec.json.Decoder(SaleRequest)
_CLICK_DECODER: Final = msgspec.json.Decoder(ClickRequest)
_REFUND_DECODER: Final = msgspec.json.Decoder(RefundRequest)


def encode_raw(event: SaleRequest | ClickRequest | RefundRequest) -> bytes:
    return _ENCODER.encode(event)


def _decode(decoder: msgspec.json.Decoder[R], payload: bytes | None) -> R | None:
    if payload is None:
        return None
    try:
        return decoder.decode(payload)
    except msgspec.MsgspecError:
        return None


def decode_sale_request(payload: bytes | None) -> SaleRequest | None:
    """The raw call, or None when the payload is not a version-2 raw call (older or invalid)."""
    event = _decode(_SALE_DECODER, payload)
    return event if event is not None and event.received_at_ms >= 0 else None


def decode_click_request(payload: bytes | None) -> ClickRequest | None:
    """The raw click, or None when the payload is not a version-2 raw click."""
    event = _decode(_CLICK_DECODER, payload)
    return event if event is not None and event.clicked_at_ms >= 0 else None


def decode_refund_request(payload: bytes | None) -> RefundRequest | None:
    """The raw refund, or None when the payload is not one."""
    event = _decode(_REFUND_DECODER, payload)
    return event if event is not None and event.received_at_ms >= 0 else None
