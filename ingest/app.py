"""The edge's aiohttp application: routes, and the publisher's lifecycle."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingest.api import MAX_BODY_BYTES, report_sales
from ingest.click import follow_link
from ingest.hosts import tls_allowed
from ingest.metrics import EdgeMetrics
from ingest.pixel import SalePixel, publish_malformed_call
from ingest.protocol import EdgeRunner, ProtocolEvents
from ingest.publisher import Publisher
from ingest.refunds import report_refunds
from ingest.settings import EdgeSettings
from ingest.snippet import PLAIN_PATH, serve_snippet
from ingest.state import METRICS, PIXEL, PUBLISHER, REGISTRY, SETTINGS
from ingest.universes import EdgeRegistry

# aiohttp answers 400 itself to request lines over its limit; a pixel call must still get the
# image, so the limit is raised far above any real tracking URL and values are bounded later.
MAX_LINE_BYTES = 65536
# The sale pixel's paths: the runner answers them past the router (ingest/protocol.py).
PIXEL_PATHS = ("/sales.php", "/sales")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    # Not ready while events do not flow to the broker: publisher restarting, broker away,
    # spool full. The body says which.
    reason = request.app[PUBLISHER].unready_reason() or request.app[REGISTRY].unready_reason()
    if reason is not None:
        return web.Response(status=503, text=f"{reason}\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    publisher = request.app[PUBLISHER]
    m.queue_depth.set(publisher.depth)
    m.spool_bytes.set(publisher.spool_bytes)
    m.flush()
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _start_publisher(app: web.Application) -> None:
    app[PUBLISHER].start()


async def _drain_publisher(app: web.Application) -> None:
    await app[PUBLISHER].close()


async def _start_registry(app: web.Application) -> None:
    app[REGISTRY].start()


async def _stop_registry(app: web.Application) -> None:
    await app[REGISTRY].close()


def create_app(settings: EdgeSettings, *, worker: int = 0) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    app[SETTINGS] = settings
    app[METRICS] = edge_metrics = EdgeMetrics()
    # One spool per worker process: each appends and replays its own, in order.
    spool_dir = Path(settings.spool_dir) / f"worker-{worker}"
    app[PUBLISHER] = publisher = Publisher(settings, edge_metrics, spool_dir)
    app[REGISTRY] = EdgeRegistry(settings)
    edge_metrics.report_readiness(publisher.unready_reason)
    pixel = SalePixel(settings, publisher, edge_metrics)
    app[PIXEL] = pixel.answer
    for path in PIXEL_PATHS:
        app.router.add_get(path, pixel.handle)
    app.router.add_get("/click", follow_link)
    app.router.add_get(PLAIN_PATH, serve_snippet)
    app.router.add_get(r"/trk.{version:[0-9a-f]{12}}.js", serve_snippet)
    app.router.add_get("/v1/tls/allowed", tls_allowed)
    app.router.add_post("/v1/sales", report_sales)
    app.router.add_post("/v1/refunds", report_refunds)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(_start_publisher)
    app.on_startup.append(_start_registry)
    # on_cleanup runs after the server stopped accepting: every answered call gets published.
    app.on_cleanup.append(_drain_publisher)
    app.on_cleanup.append(_stop_registry)
    return app


def create_runner(settings: EdgeSettings, *, worker: int = 0) -> web.AppRunner:
    """The app's runner: no per-request access log, request lines up to 64 KiB, slow request
    heads and idle keep-alive connections closed, protocol errors logged without floods."""
    app = create_app(settings, worker=worker)
    return EdgeRunner(
        app,
        head_timeout_s=settings.header_timeout_s,
        direct=dict.fromkeys(PIXEL_PATHS, app[PIXEL]),
        events=ProtocolEvents(
            app[METRICS].registry,
            on_malformed_pixel=lambda line: publish_malformed_call(app, line),
        ),
        # aiohttp's default (about an hour) lets idle sockets pile up.
        keepalive_timeout=settings.keepalive_s,
        access_log=None,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_LINE_BYTES,
    )
