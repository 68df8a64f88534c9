"""The edge's baseline: a bare aiohttp app answering the same GIF and doing nothing else.

Usage: ``python -m bench.baseline --port P [--workers N]`` (same server set-up as the edge:
uvloop, SO_REUSEPORT, no access log).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys

import uvloop
from aiohttp import web

from ingest.gif import NO_CACHE_HEADERS, PIXEL


async def gif(request: web.Request) -> web.Response:
    return web.Response(body=PIXEL, headers=NO_CACHE_HEADERS)


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/sales.php", gif)
    app.router.add_get("/healthz", gif)
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
    args = parser.parse_args()
    if args.workers > 1:
        children = [
            subprocess.Popen([sys.executable, "-m", "bench.baseline", "--port", str(args.port)])
            for _ in range(args.workers)
        ]

        def stop(*_: object) -> None:
            for child in children:
                child.terminate()

        signal.signal(signal.SIGTERM, stop)
        return max(c.wait() for c in children)
    uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
