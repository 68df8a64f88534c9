"""The sale pixel: parse, attach the verified click context, publish, answer the GIF.

Every request gets the image at once, whatever it carried; what could not be accepted is
published as a rejected call with its reason.
"""

from __future__ import annotations

import time

from aiohttp import web

from ingest.gif import NO_CACHE_HEADERS, PIXEL
from ingest.ids import new_event_id
from ingest.metrics import EdgeMetrics
from ingest.privacy import client_address, client_hash
from ingest.salecall import sale_call
from ingest.settings import EdgeSettings
from ingest.signing import ClickToken, SignatureError, read_token
from ingest.state import METRICS, PUBLISHER, SETTINGS
from schemas.events import encode

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


async def sale_pixel(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]

    def context(universe: str, click_id: str) -> ClickToken | None:
        cookie = request.cookies.get(cookie_name(universe), "")
        return resolve_context(
            click_id, cookie, universe=universe, now_ms=received_at_ms, settings=settings,
            metrics=metrics,
        )  # fmt: skip

    _, _, query = request.raw_path.partition("?")
    received_at_ms = time.time_ns() // 1_000_000
    address = client_address(
        request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxy_hops
    )
    call = sale_call(
        query, event_id=new_event_id(), received_at_ms=received_at_ms, context=context,
        client_hash=client_hash(settings.secret, address),
    )  # fmt: skip
    app[PUBLISHER].publish(settings.topics.sales, call.kafka_key(), encode(call))
    if call.status == "accepted":
        metrics.sales_accepted.inc()
    else:
        metrics.sales_rejected.inc()
        metrics.rejects.labels(call.reason).inc()
    return web.Response(body=PIXEL, headers=NO_CACHE_HEADERS)
