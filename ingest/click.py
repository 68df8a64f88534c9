"""The click redirect: verify the signed link, publish the click as received, set the cookie,
redirect with the click's opaque token (``schemas/click_token.py``) as ``trk_click``.

A link whose signature does not verify redirects nowhere (no open redirect), sets nothing and
publishes nothing; it is answered 400 with a short page and counted. Only absolute http(s)
targets without control characters or user info are ever redirected to, signed or not.
"""

from __future__ import annotations

import re
import time
from typing import Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from aiohttp import web

from ingest.hosts import click_cookie_samesite
from ingest.ids import new_event_id
from ingest.privacy import request_client_hash
from ingest.state import METRICS, PUBLISHER, REGISTRY, SETTINGS
from schemas.click_token import seal
from schemas.raw import QUERY_MAX, ClickRequest, encode_raw, kafka_key
from schemas.rules import cookie_name, parse_link
from schemas.signing import SignatureError, verify_link

CLICK_PARAMETER: Final = "trk_click"

REFUSED_PAGE: Final = (
    "<!doctype html><meta charset=utf-8><title>Invalid link</title>"
    "<p>This tracked link is not valid. Please use the link from the original e-mail.</p>"
)


def landing_url(target: str, token: str) -> str:
    """The target with the click id appended to its query (before any fragment), ASCII only."""
    parts = urlsplit(target)
    extra = urlencode({CLICK_PARAMETER: token})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return ascii_url(urlunsplit(parts._replace(query=query)))


_NON_ASCII: Final = re.compile(r"[^\x00-\x7f]+")


def ascii_url(url: str) -> str:
    """``url`` with its non-ASCII characters percent-encoded (UTF-8), everything else as is.

    A header is ASCII: raw UTF-8 in ``Location`` is read differently by different clients.
    Reserved characters and existing ``%XX`` escapes keep their meaning, so only non-ASCII
    is touched, as browsers do when they send such a URL.
    """
    return _NON_ASCII.sub(lambda m: quote(m.group(), safe=""), url)


async def follow_link(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        return _follow_link(request)
    finally:
        request.app[METRICS].click_seconds.observe(time.perf_counter() - started)


def _follow_link(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]
    _, _, query = request.raw_path.partition("?")
    try:
        link, signature = parse_link(query)
        verify_link(settings.secret, link, signature)
    except SignatureError as e:
        metrics.clicks.labels(e.reason).inc()
        return web.Response(
            status=400, text=REFUSED_PAGE, content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )  # fmt: skip

    now_ms = time.time_ns() // 1_000_000
    click_id = new_event_id()
    # What was received, verified: the projector reads the link from the query itself.
    event = ClickRequest(
        event_id=click_id, clicked_at_ms=now_ms, query=query[:QUERY_MAX],
        client_hash=request_client_hash(request, settings),
    )  # fmt: skip
    key = kafka_key(link.universe, link.customer_id)  # one customer's clicks in order
    app[PUBLISHER].publish(settings.kafka.topics.clicks, key, encode_raw(event))
    metrics.clicks.labels("redirected").inc()

    # The universe's own window when the registry gives one: the token says when it expires,
    # so the shop's snippet keeps it that long, and the cookie lives as long.
    window_ms = app[REGISTRY].window_ms(link.universe, settings.attribution_window_ms)
    expires_at_s = (now_ms + window_ms) // 1000
    token = seal(settings.secret, link.click(now_ms, click_id), expires_at_s=expires_at_s)
    response = web.Response(
        status=302,
        headers={"Location": landing_url(link.target, token), "Cache-Control": "no-store"},
    )
    # The last click wins: a new click overwrites the cookie of the same universe. Host-only:
    # on a shop's tracking host, no other subdomain of the shop receives it.
    response.set_cookie(
        cookie_name(link.universe), token, max_age=window_ms // 1000, path="/",
        httponly=True, secure=True,
        samesite=click_cookie_samesite(settings.first_party_hosts, request.host),
    )  # fmt: skip
    return response
