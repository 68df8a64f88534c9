"""`python -m ingest`: run the edge."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop
from aiohttp import web

from ingest.app import create_runner
from ingest.settings import EdgeSettings
from schemas.environ import ConfigError

logger = logging.getLogger("ingest")


async def serve(settings: EdgeSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = create_runner(settings)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True)
    await site.start()
    logger.info("edge listening on http://%s:%d", settings.host, settings.port)
    await stop.wait()
    logger.info("stopping: no new requests, draining the publish queue")
    await runner.cleanup()
    logger.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest", description="The tracking edge.")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s edge %(levelname)s %(message)s")
    try:
        settings = EdgeSettings.from_env()
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
