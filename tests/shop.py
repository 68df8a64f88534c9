"""A small shop for the browser journeys: a landing page, two more pages, a confirmation page.

Its pages name a tracker by origin (another site, or the shop's own tracking subdomain) and
integrate it one of three ways, the first part of each path:

- ``img``: the seed's set-up, an ``<img>`` of the sale pixel on the confirmation page only;
- ``snippet``: ``trk.js`` on every page, ``trk.sale({...})`` (twice: counted once) then the
  seed's ``<noscript><img></noscript>`` on the confirmation page;
- ``csp``: ``trk.js`` on every page under a strict Content-Security-Policy that allows the
  tracker's origin only (no inline script), the sale in the tag's ``data-*`` attributes.
"""

from __future__ import annotations

import contextlib
import html
import json
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlencode

from aiohttp import web

PAGES: Final = ("landing", "product", "cart", "confirmation")
SETUPS: Final = ("img", "snippet", "csp")
SALE_FIELDS: Final = ("universe", "amount", "id", "currency", "customer")
TRACKER = web.AppKey("tracker", str)


def csp(tracker: str) -> str:
    # 'self' images: the browser's own request for /favicon.ico falls under img-src too.
    return (
        f"default-src 'none'; script-src {tracker}; img-src {tracker} 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'"
    )


def _sale_call(tracker: str, sale: dict[str, str]) -> str:
    return f"{tracker}/sales.php?{urlencode(sale)}"


def page(setup: str, name: str, tracker: str, sale: dict[str, str]) -> str:
    """One page of the shop, as ``setup`` integrates the tracker."""
    body = [f"<!doctype html><meta charset=utf-8><title>{name}</title><h1>{name}</h1>"]
    script = f'<script src="{html.escape(tracker)}/trk.js"></script>'
    if name == "confirmation":
        if setup == "img":
            body.append(f'<img alt="" src="{html.escape(_sale_call(tracker, sale))}">')
        elif setup == "snippet":
            # As the interface has it; the JSON is safe inside a script element.
            given = json.dumps(sale).replace("<", "\\u003c")
            body += [script, f"<script>trk.sale({given}); trk.sale({given});</script>"]
            body.append(
                f'<noscript><img src="{html.escape(_sale_call(tracker, sale))}"></noscript>'
            )
        else:
            data = "".join(f' data-{k}="{html.escape(v)}"' for k, v in sale.items())
            body.append(f'<script src="{html.escape(tracker)}/trk.js"{data}></script>')
    else:
        if setup != "img":
            body.append(script)
        # The cart's link is the journey's "pay" step, which names the order.
        following = PAGES[PAGES.index(name) + 1]
        body.append(f'<a id="next" href="/{setup}/{following}">next</a>')
    return "".join(body)


async def _serve(request: web.Request) -> web.Response:
    setup, name = request.match_info["setup"], request.match_info["page"]
    if setup not in SETUPS or name not in PAGES:
        raise web.HTTPNotFound()
    tracker = request.app[TRACKER]
    sale = {k: request.query[k] for k in SALE_FIELDS if k in request.query}
    headers = {"Cache-Control": "no-store"}
    if setup == "csp":
        headers["Content-Security-Policy"] = csp(tracker)
    return web.Response(
        text=page(setup, name, tracker, sale), content_type="text/html", headers=headers
    )


def shop_app(tracker: str) -> web.Application:
    app = web.Application()
    app[TRACKER] = tracker
    app.router.add_get("/{setup}/{page}", _serve)
    return app


@contextlib.asynccontextmanager
async def running_shop(tracker: str) -> AsyncIterator[int]:
    """The shop on a free loopback port; yields the port."""
    runner = web.AppRunner(shop_app(tracker), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
