"""The edge's baseline: a bare aiohttp app answering the same GIF and doing nothing else.

Usage: ``python -m bench.baseline --port P [--workers N] [--prebuilt]`` (same server set-up
as the edge: uvloop, SO_REUSEPORT, no access log). By default it answers with aiohttp's
``web.Response``, the bare app the edge's goal is measured against; ``--prebuilt`` answers
with the edge's own ``GifResponse`` (cached bytes written to the transport), so the ratio to
it shows what the edge's own work (reading, keying, publishing) costs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys

import uvloop
from aiohttp import web

from ingest.gif import NO_CACHE_HEADERS, PIXEL, GifResponse


async def gif(request: web.Request) -> web.Response:
    return web.Response(body=PIXEL, headers=NO_CACHE_HEADERS)


async def prebuilt_gif(request: web.Request) -> web.StreamResponse:
    return GifResponse()


async def serve(port: int, *, prebuilt: bool) -> None:
    app = web.Application()
    handler = prebuilt_gif if prebuilt else gif
    app.router.add_get("/sales.php", handler)
    app.router.add_get("/healthz", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--prebuilt", action="store_true")
    args = parser.parse_args()
    if args.workers > 1:
        one = [sys.executable, "-m", "bench.baseline", "--port", str(args.port)]
        children = [
            subprocess.Popen(one + (["--prebuilt"] if args.prebuilt else []))
            for _ in range(args.workers)
        ]

        def stop(*_: object) -> None:
            for child in children:
                child.terminate()

        signal.signal(signal.SIGTERM, stop)
        return max(c.wait() for c in children)
    uvloop.run(serve(args.port, prebuilt=args.prebuilt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
