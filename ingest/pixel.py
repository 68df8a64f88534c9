"""The sale pixel: publish the call as received, answer the GIF.

The edge does not interpret the call (the projector does, with schemas/rules.py): it keeps
the query string as sent, our own ``trk_*`` cookies, the receive time and the client hash,
and reads only the universe and id, to key the event so that every call of one transaction
lands in one partition. Every request gets the image at once, whatever it carried.

The handler only reads what the call carried, stamps it (receive time, event id) and hands
it to the publisher; :func:`call_message` makes the event later, a batch at a time, off the
request path (``ingest/backlog.py`` says why).
"""

from __future__ import annotations

import time
from functools import partial

from aiohttp import web

from ingest.backlog import Backlog
from ingest.gif import GifResponse
from ingest.handler_errors import handler_failed
from ingest.ids import new_event_id
from ingest.message import Message
from ingest.metrics import EdgeMetrics
from ingest.privacy import peer_client_hash
from ingest.settings import EdgeSettings
from ingest.state import METRICS, PUBLISHER, SETTINGS
from schemas.raw import COOKIES_MAX, QUERY_MAX, SaleRequest, encode_raw, kafka_key
from schemas.reasons import Reason
from schemas.rules import COOKIE_PREFIX, key_fields
from schemas.unicode import is_unicode


def our_cookies(header: str) -> str:
    """The ``trk_*`` pairs of a Cookie header (``name=value; ...``): the only ones we need.

    A browser sends the tracker's host only its own cookies, but a proxy or a shared domain
    may add others; they are nobody's business here.
    """
    if COOKIE_PREFIX not in header:
        return ""
    ours = "; ".join(
        pair for part in header.split(";") if (pair := part.strip()).startswith(COOKIE_PREFIX)
    )
    # Header bytes that are not UTF-8 arrive surrogate-escaped and could not be encoded into
    # the event: they travel escaped (\xff), which no genuine token contains.
    return (
        ours
        if is_unicode(ours)
        else ours.encode(errors="surrogateescape").decode(errors="backslashreplace")
    )


def key_of(query: str, event_id: str) -> bytes:
    """The Kafka key: universe and transaction id as the projector will read them.

    The projector's reading of the two (``key_fields``), so any spelling of one universe and
    id (percent encoding, parameter order) gives one key. A call without id is unique by its
    event id.
    """
    universe, transaction_id = key_fields(query)
    return kafka_key(universe, transaction_id or event_id)


# What a pixel call carried, as read by the handler: the request's path (query included), its
# Cookie and X-Forwarded-For headers, the peer address, the receive time (epoch ms) and the
# event id. A plain tuple: the cheapest thing to build per call.
Carried = tuple[str, str, str | None, str | None, int, str]


class SalePixel:
    """The pixel's handler, bound once to what every call uses: the publisher, the metrics
    and the function that makes the event (with the settings it needs)."""

    __slots__ = ("_make", "_metrics", "_publish_later", "_published", "_seconds")

    def __init__(self, settings: EdgeSettings, publisher: Backlog, metrics: EdgeMetrics) -> None:
        self._make = partial(call_message, settings)
        self._publish_later = publisher.publish_later
        self._metrics = metrics
        self._published = metrics.sales_published
        self._seconds = metrics.pixel_seconds

    def answer(self, request: web.BaseRequest) -> GifResponse:
        """Queue the call for publishing and answer the image; never raises.

        A plain function, not a coroutine: the edge's runner calls it straight from the
        connection for the pixel's paths (``ingest/protocol.py``), past aiohttp's router.
        """
        started = time.perf_counter()
        # Silent mode: whatever went wrong, the merchant's page gets its image, and the
        # failure is counted and logged (rate-limited) instead of turning into a 500.
        try:
            headers = request.headers
            carried: Carried = (
                request.raw_path, headers.get("Cookie", ""), request.remote,
                headers.get("X-Forwarded-For"), time.time_ns() // 1_000_000, new_event_id(),
            )  # fmt: skip
            self._publish_later(self._make, carried, endpoint="sales")
            self._published.count += 1
        except Exception as e:
            handler_failed(self._metrics, "sales", e, "answered the GIF")
        self._seconds.observe(time.perf_counter() - started)
        return GifResponse()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The route's handler, for the calls aiohttp's router dispatches."""
        return self.answer(request)


def call_message(settings: EdgeSettings, carried: Carried) -> Message:
    """The event of a pixel call. Pure: the same call gives the same bytes."""
    path, cookie_header, peer, forwarded_for, received_at_ms, event_id = carried
    query = path.partition("?")[2]
    cookies = our_cookies(cookie_header)
    too_long = (
        "query" if len(query) > QUERY_MAX else "cookies" if len(cookies) > COOKIES_MAX else ""
    )
    call = SaleRequest(
        event_id=event_id, received_at_ms=received_at_ms, source="pixel",
        query=query[:QUERY_MAX], cookies=cookies[:COOKIES_MAX], too_long=too_long,
        client_hash=peer_client_hash(peer, forwarded_for, settings),
    )  # fmt: skip
    return Message(settings.kafka.topics.sales, key_of(call.query, event_id), encode_raw(call))


def publish_malformed_call(app: web.Application, request_line: bytes) -> None:
    """A pixel request aiohttp's parser refused (raw control or non-UTF-8 bytes in its line).

    It never reached the handler, so it is published here with ``problem`` set: the
    projector records it as rejected, ``malformed_request``, with the escaped line.
    """
    settings = app[SETTINGS]
    event_id = new_event_id()
    call = SaleRequest(
        event_id=event_id, received_at_ms=time.time_ns() // 1_000_000, source="pixel",
        query=request_line.decode("ascii", "backslashreplace")[:QUERY_MAX],
        problem=Reason.MALFORMED_REQUEST,
    )  # fmt: skip
    app[PUBLISHER].publish(settings.kafka.topics.sales, kafka_key("", event_id), encode_raw(call))
    app[METRICS].sales_published.count += 1
