"""The projector's small HTTP surface: /healthz, /readyz and /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from projector.loop import Projector

PROJECTOR = web.AppKey("projector", Projector)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    reason = request.app[PROJECTOR].health
    if reason is not None:
        return web.Response(status=503, text=f"{reason}\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[PROJECTOR].metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def create_app(projector: Projector) -> web.Application:
    app = web.Application()
    app[PROJECTOR] = projector
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
