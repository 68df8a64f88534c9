"""The edge's aiohttp application: routes, and the publisher's lifecycle."""

from __future__ import annotations

import time
import uuid

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingest.gif import NO_CACHE_HEADERS, PIXEL
from ingest.metrics import EdgeMetrics
from ingest.publisher import Publisher
from ingest.salecall import sale_call
from ingest.settings import EdgeSettings
from schemas.events import encode

SETTINGS = web.AppKey("settings", EdgeSettings)
METRICS = web.AppKey("metrics", EdgeMetrics)
PUBLISHER = web.AppKey("publisher", Publisher)

# aiohttp answers 400 itself to request lines over its limit; a pixel call must still get the
# image, so the limit is raised far above any real tracking URL and values are bounded later.
MAX_LINE_BYTES = 65536


async def sale_pixel(request: web.Request) -> web.Response:
    app = request.app
    _, _, query = request.raw_path.partition("?")
    call = sale_call(query, event_id=uuid.uuid4().hex, received_at_ms=time.time_ns() // 1_000_000)
    app[PUBLISHER].publish(app[SETTINGS].topics.sales, call.kafka_key(), encode(call))
    metrics = app[METRICS]
    if call.status == "accepted":
        metrics.requests.labels("sales", "accepted").inc()
    else:
        metrics.requests.labels("sales", "rejected").inc()
        metrics.rejects.labels(call.reason).inc()
    return web.Response(body=PIXEL, headers=NO_CACHE_HEADERS)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    if not publisher.connected:
        return web.Response(status=503, text="broker not connected\n")
    if publisher.full():
        return web.Response(status=503, text="publish queue full\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    m.queue_depth.set(request.app[PUBLISHER].depth)
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _start_publisher(app: web.Application) -> None:
    app[PUBLISHER].start()


async def _drain_publisher(app: web.Application) -> None:
    await app[PUBLISHER].close()


def create_app(settings: EdgeSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = edge_metrics = EdgeMetrics()
    app[PUBLISHER] = Publisher(settings, edge_metrics)
    app.router.add_get("/sales.php", sale_pixel)
    app.router.add_get("/sales", sale_pixel)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(_start_publisher)
    # on_cleanup runs after the server stopped accepting: every answered call gets published.
    app.on_cleanup.append(_drain_publisher)
    return app


def create_runner(settings: EdgeSettings) -> web.AppRunner:
    """The app's runner: no per-request access log, request lines up to 64 KiB."""
    return web.AppRunner(
        create_app(settings),
        access_log=None,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_LINE_BYTES,
    )
