"""The edge's hostnames: its own (the cross-site set-up) and the shops' first-party ones.

A shop points a subdomain of its own site (``track.shop.example``) at the edge; a reverse
proxy in front (compose/caddy/Caddyfile) obtains its certificate on demand, after asking
:func:`tls_allowed` whether the name is one of ours. On such a host the click cookie is the
shop's own (same site as its pages), so it can be ``SameSite=Lax``; on the edge's own host it
is a third-party cookie and must be ``SameSite=None`` to be sent at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from aiohttp import web

from ingest.state import SETTINGS
from schemas.environ import ConfigError


def hostname(host_header: str) -> str:
    """The name a request was sent to, lower-case, without its port ("" if none)."""
    host = host_header.strip().lower()
    if host.startswith("["):  # an IPv6 literal, never a shop's tracking host
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


SameSite = Literal["Lax", "None"]


def click_cookie_samesite(first_party_hosts: Mapping[str, str], host_header: str) -> SameSite:
    """``Lax`` on a shop's own tracking host (its pixel is a same-site request), else ``None``
    (the pixel on the shop's pages is a cross-site request: only a ``None`` cookie is sent,
    where the browser sends third-party cookies at all)."""
    return "Lax" if hostname(host_header) in first_party_hosts else "None"


def link_base(public_url: str, first_party_hosts: Mapping[str, str], universe: str,
              host: str = "") -> str:  # fmt: skip
    """Where a universe's tracked links point: ``host`` if given (one of the universe's), else
    its first first-party host, else the edge's public URL."""
    own = [h for h, u in first_party_hosts.items() if u == universe]
    if host:
        name = host.lower()
        if name not in own:
            listed = ", ".join(own) or "none"
            raise ConfigError(
                f"{host!r} is not a first-party host of universe {universe!r} "
                f"(TRACKER_EDGE_FIRST_PARTY_HOSTS lists: {listed})"
            )
        return f"https://{name}"
    return f"https://{own[0]}" if own else public_url


async def tls_allowed(request: web.Request) -> web.Response:
    """Caddy's ``on_demand_tls`` ``ask`` endpoint: 200 if a certificate may be obtained for
    ``?domain=``, else 404. Without it anyone could point names at the proxy and have it
    request certificates (and exhaust the CA's rate limits) for them."""
    domain = request.query.get("domain", "").lower()
    if domain in request.app[SETTINGS].first_party_hosts:
        return web.Response(text="ok\n")
    return web.Response(status=404, text="not a tracking host of this edge\n")
