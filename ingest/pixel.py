"""The sale pixel: parse, attach the verified click context, publish, answer the GIF.

Every request gets the image at once, whatever it carried; what could not be accepted is
published as a rejected call with its reason.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from aiohttp import web

from ingest.gif import NO_CACHE_HEADERS, PIXEL
from ingest.metrics import EdgeMetrics
from ingest.privacy import client_address, client_hash
from ingest.salecall import sale_call
from ingest.settings import EdgeSettings
from ingest.signing import ClickToken, SignatureError, read_token
from ingest.state import METRICS, PUBLISHER, SETTINGS
from schemas.events import SaleCall, encode

COOKIE_PREFIX = "trk_"


def cookie_name(universe: str) -> str:
    """One cookie per universe, so clicks for two merchants do not overwrite each other."""
    return f"{COOKIE_PREFIX}{universe}"


def with_context(call: SaleCall, click: ClickToken | None) -> SaleCall:
    if click is None:
        return dataclasses.replace(call, click_id="")
    return dataclasses.replace(
        call,
        click_id=click.click_id,
        campaign_id=click.campaign_id,
        link_id=click.link_id,
        product=click.product,
        click_customer_id=click.customer_id,
        clicked_at_ms=click.clicked_at_ms,
    )


def resolve_context(
    call: SaleCall, cookie: str, settings: EdgeSettings, metrics: EdgeMetrics
) -> ClickToken | None:
    """The most recent genuine click of this universe among the cookie and the click id."""
    found: list[ClickToken] = []
    for source, token in (("cookie", cookie), ("click_id", call.click_id)):
        if not token:
            continue
        try:
            found.append(
                read_token(
                    settings.secret, token, universe=call.universe,
                    now_ms=call.received_at_ms, window_ms=settings.attribution_window_ms,
                )
            )  # fmt: skip
            metrics.click_context.labels(source, "valid").inc()
        except SignatureError as e:
            # Forged, expired or foreign: ignored and counted, never trusted.
            metrics.click_context.labels(source, e.reason).inc()
    return max(found, key=lambda c: (c.clicked_at_ms, c.click_id), default=None)


async def sale_pixel(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    _, _, query = request.raw_path.partition("?")
    call = sale_call(query, event_id=uuid.uuid4().hex, received_at_ms=time.time_ns() // 1_000_000)
    if call.status == "accepted":
        cookie = request.cookies.get(cookie_name(call.universe), "")
        call = with_context(call, resolve_context(call, cookie, settings, app[METRICS]))
    address = client_address(
        request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxy_hops
    )
    call = dataclasses.replace(call, client_hash=client_hash(settings.secret, address))
    app[PUBLISHER].publish(settings.topics.sales, call.kafka_key(), encode(call))
    metrics = app[METRICS]
    metrics.requests.labels("sales", call.status).inc()
    if call.status == "rejected":
        metrics.rejects.labels(call.reason).inc()
    return web.Response(body=PIXEL, headers=NO_CACHE_HEADERS)
