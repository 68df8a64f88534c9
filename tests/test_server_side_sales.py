"""The server-side path: the shop's server keeps ``trk_click`` with the session and sends it
as ``click`` in ``POST /v1/sales``; no cookie and no script in the browser are needed."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from clickhouse_connect.driver.asyncclient import AsyncClient
from conftest import TEST_API_KEY

from helpers import eventually, rows, running_edge, running_projector
from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings
from schemas.signing import Link, link_url

pytestmark = pytest.mark.integration

SESSIONS = web.AppKey("sessions", dict[str, dict[str, str]])
EDGE = web.AppKey("edge", str)


async def landing(request: web.Request) -> web.Response:
    # What docs/shop-setup.md asks of a shop's server: on any request carrying trk_click,
    # keep it with the visitor's session (a later click replaces it).
    session_id = request.cookies.get("shop_session") or secrets.token_urlsafe(16)
    session = request.app[SESSIONS].setdefault(session_id, {})
    if "trk_click" in request.query:
        session["trk_click"] = request.query["trk_click"]
    response = web.Response(text="landing")
    response.set_cookie("shop_session", session_id, httponly=True, samesite="Lax")
    return response


async def checkout(request: web.Request) -> web.Response:
    """The order is paid: the shop's server reports it, with the click kept in the session."""
    session = request.app[SESSIONS].get(request.cookies.get("shop_session", ""), {})
    sale = {"amount": "42,10", "id": request.query["order"], "currency": "EUR"}
    if "trk_click" in session:
        sale["click"] = session["trk_click"]
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{request.app[EDGE]}/v1/sales", json=sale,
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        ) as answer,
    ):  # fmt: skip
        return web.Response(status=answer.status, text=await answer.text())


@contextlib.asynccontextmanager
async def running_shop_server(edge: str) -> AsyncIterator[str]:
    app = web.Application()
    app[SESSIONS], app[EDGE] = {}, edge
    app.router.add_get("/landing", landing)
    app.router.add_get("/product", landing)
    app.router.add_get("/checkout", checkout)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_sale_reported_by_the_shops_server_is_attributed_to_the_last_click(
    edge_settings: EdgeSettings, projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    db = projector_settings.clickhouse_database
    async with (
        running_projector(projector_settings),
        running_edge(edge_settings) as edge,
        running_shop_server(edge) as shop,
    ):
        # A browser that sends the tracker no cookie (no jar: the shop's session cookie
        # is passed by hand), as where third-party cookies are blocked.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as browser:
            session_cookie = ""
            for campaign, link_id in (("spring", "hero"), ("summer", "footer")):
                link = Link("demo", "alice", campaign, link_id, f"{shop}/landing?utm=mail")
                async with browser.get(
                    link_url(edge, edge_settings.secret, link), allow_redirects=False
                ) as click:
                    assert click.status == 302
                    landing_url = click.headers["Location"]
                headers = {"Cookie": session_cookie} if session_cookie else {}
                async with browser.get(landing_url, headers=headers) as page:
                    session_cookie = session_cookie or page.headers["Set-Cookie"].split(";")[0]
            headers = {"Cookie": session_cookie}
            async with browser.get(f"{shop}/product", headers=headers) as page:
                assert page.status == 200
            async with browser.get(f"{shop}/checkout?order=o-42", headers=headers) as paid:
                assert paid.status == 202, await paid.text()

        async def sales() -> list[tuple[object, ...]]:
            if await rows(ch, f"EXISTS TABLE {db}.sales") != [(1,)]:
                return []
            return await rows(
                ch, f"SELECT transaction_id, customer_id, campaign_id, link_id FROM {db}.sales"
            )

        assert await eventually(sales, bool) == [("o-42", "alice", "summer", "footer")]
