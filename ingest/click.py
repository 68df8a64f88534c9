"""The click redirect: verify the signed link, publish the click, set the cookie, redirect.

A link whose signature does not verify redirects nowhere (no open redirect), sets nothing and
publishes nothing; it is answered 400 with a short page and counted. Only absolute http(s)
targets without control characters or user info are ever redirected to, signed or not.
"""

from __future__ import annotations

import re
import time
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from aiohttp import web

from ingest.ids import new_event_id
from ingest.pixel import cookie_name, request_client_hash
from ingest.salecall import OPAQUE_ID, UNIVERSE
from ingest.signing import ClickToken, Link, SignatureError, make_token, safe_target, verify_link
from ingest.state import METRICS, PUBLISHER, SETTINGS
from schemas.events import Click, encode

CLICK_PARAMETER: Final = "trk_click"
PRODUCT: Final = re.compile(r"[A-Za-z0-9_.-]{0,32}")
_FIELDS: Final = {"u", "c", "k", "l", "p", "url", "s"}

REFUSED_PAGE: Final = (
    "<!doctype html><meta charset=utf-8><title>Invalid link</title>"
    "<p>This tracked link is not valid. Please use the link from the original e-mail.</p>"
)


def parse_link(query: str) -> tuple[Link, str]:
    """The link and signature a click URL carries; raise SignatureError with the reason."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise SignatureError("link_malformed") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in _FIELDS:
            if name in values and values[name] != value:
                raise SignatureError("link_malformed")
            values[name] = value
    link = Link(
        universe=values.get("u", ""),
        customer_id=values.get("c", ""),
        campaign_id=values.get("k", ""),
        link_id=values.get("l", ""),
        target=values.get("url", ""),
        product=values.get("p", ""),
    )
    problem = link_problem(link)
    if problem:
        raise SignatureError(problem)
    return link, values.get("s", "")


def link_problem(link: Link) -> str:
    """Why a link cannot be signed or followed ("" when it can)."""
    if not UNIVERSE.fullmatch(link.universe):
        return "link_bad_universe"
    if not all(OPAQUE_ID.fullmatch(v) for v in (link.customer_id, link.campaign_id, link.link_id)):
        return "link_bad_ids"
    if not PRODUCT.fullmatch(link.product):
        return "link_bad_product"
    if not safe_target(link.target):
        return "link_unsafe_target"
    return ""


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
    event = Click(
        event_id=click_id, clicked_at_ms=now_ms, universe=link.universe,
        customer_id=link.customer_id, campaign_id=link.campaign_id, link_id=link.link_id,
        product=link.product, client_hash=request_client_hash(request, settings),
    )  # fmt: skip
    app[PUBLISHER].publish(settings.topics.clicks, event.kafka_key(), encode(event))
    metrics.clicks.labels("redirected").inc()

    token = make_token(
        settings.secret,
        ClickToken(link.universe, link.customer_id, link.campaign_id, link.link_id,
                   link.product, now_ms, click_id),
    )  # fmt: skip
    response = web.Response(
        status=302,
        headers={"Location": landing_url(link.target, token), "Cache-Control": "no-store"},
    )
    # The last click wins: a new click overwrites the cookie of the same universe.
    response.set_cookie(
        cookie_name(link.universe), token,
        max_age=settings.attribution_window_ms // 1000, path="/",
        httponly=True, secure=True, samesite="None",
    )  # fmt: skip
    return response
