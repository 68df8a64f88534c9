"""The sale pixel: parse, attach the verified click context, publish, answer the GIF.

Every request gets the image at once, whatever it carried; what could not be accepted is
published as a rejected call with its reason.
"""

from __future__ import annotations

import time

from aiohttp import web

from ingest.gif import NO_CACHE_HEADERS, PIXEL
from ingest.handler_errors import handler_failed
from ingest.ids import new_event_id
from ingest.metrics import EdgeMetrics
from ingest.privacy import client_address, client_hash
from ingest.salecall import RAW_KEEP, sale_call
from ingest.settings import EdgeSettings
from ingest.signing import ClickToken, SignatureError, read_token
from ingest.state import METRICS, PUBLISHER, SETTINGS
from schemas.events import SaleCall, encode

COOKIE_PREFIX = "trk_"


def cookie_name(universe: str) -> str:
    """One cookie per universe, so clicks for two merchants do not overwrite each other."""
    return f"{COOKIE_PREFIX}{universe}"


def resolve_context(
    click_id: str,
    cookie: str,
    *,
    universe: str,
    now_ms: int,
    settings: EdgeSettings,
    metrics: EdgeMetrics,
) -> ClickToken | None:
    """The most recent genuine click of this universe among the cookie and the click id."""
    found: list[ClickToken] = []
    for source, token in (("cookie", cookie), ("click_id", click_id)):
        if not token:
            continue
        try:
            found.append(
                read_token(
                    settings.secret, token, universe=universe,
                    now_ms=now_ms, window_ms=settings.attribution_window_ms,
                )
            )  # fmt: skip
            metrics.click_context.labels(source, "valid").inc()
        except SignatureError as e:
            # Forged, expired or foreign: ignored and counted, never trusted.
            metrics.click_context.labels(source, e.reason).inc()
    return max(found, key=lambda c: (c.clicked_at_ms, c.click_id), default=None)


def request_client_hash(request: web.BaseRequest, settings: EdgeSettings) -> str:
    """The keyed hash of the caller's address (see ``ingest.privacy``)."""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded is not None and not forwarded.isascii():
        # Header bytes that are not ASCII arrive surrogate-escaped: no address, and they could
        # not be hashed. Read as if the header were absent.
        forwarded = None
    address = client_address(request.remote, forwarded, settings.trusted_proxy_hops)
    return client_hash(settings.secret, address)


async def sale_pixel(request: web.Request) -> web.Response:
    # Silent mode: whatever went wrong, the merchant's page gets its image, and the failure is
    # counted and logged (rate-limited) instead of turning into a 500.
    try:
        _record_sale(request)
    except Exception as e:
        handler_failed(request.app[METRICS], "sales", e, "answered the GIF")
    return web.Response(body=PIXEL, headers=NO_CACHE_HEADERS)


def _record_sale(request: web.Request) -> None:
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]

    def context(universe: str, click_id: str) -> ClickToken | None:
        try:
            cookie = request.cookies.get(cookie_name(universe), "")
            return resolve_context(
                click_id, cookie, universe=universe, now_ms=received_at_ms, settings=settings,
                metrics=metrics,
            )  # fmt: skip
        except Exception as e:
            # The sale itself is fine: it counts, only without the click it came from.
            handler_failed(metrics, "sales", e, "call published without click context")
            return None

    _, _, query = request.raw_path.partition("?")
    received_at_ms = time.time_ns() // 1_000_000
    call = sale_call(
        query, event_id=new_event_id(), received_at_ms=received_at_ms, context=context,
        client_hash=request_client_hash(request, settings),
    )  # fmt: skip
    app[PUBLISHER].publish(settings.topics.sales, call.kafka_key(), encode(call))
    if call.status == "accepted":
        metrics.sales_accepted.inc()
    else:
        metrics.sales_rejected.inc()
        metrics.rejects.labels(call.reason).inc()


def publish_malformed_call(app: web.Application, request_line: bytes) -> None:
    """A pixel request aiohttp's parser refused (raw control or non-UTF-8 bytes in its line).

    It never reached the handler, so it is published here as a rejected call,
    ``malformed_request``, keeping the request line (escaped, bounded) for diagnosis.
    """
    settings = app[SETTINGS]
    line = request_line.decode("ascii", "backslashreplace")[:RAW_KEEP]
    call = SaleCall(
        event_id=new_event_id(), received_at_ms=time.time_ns() // 1_000_000, source="pixel",
        status="rejected", reason="malformed_request", universe="", transaction_id="",
        amount="", amount_raw=line, currency="", customer_id="", click_id="",
    )  # fmt: skip
    app[PUBLISHER].publish(settings.topics.sales, call.kafka_key(), encode(call))
    metrics = app[METRICS]
    metrics.sales_rejected.inc()
    metrics.rejects.labels(call.reason).inc()
