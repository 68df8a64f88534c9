"""`python -m projector [run]` runs the projector; `rebuild` replays the log into new tables;
`accept-log` resumes partitions whose log went backwards from the log as it is now;
`universes` manages the universe registry (projector/universes.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop
from aiohttp import web

from projector import collector, universes
from projector.accept import AcceptError, accept_log
from projector.errors import ProjectorError
from projector.http import create_app
from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.rebuild import rebuild
from projector.settings import ProjectorSettings
from schemas.context import shell_environ
from schemas.environ import ConfigError
from schemas.logs import configure as configure_logs

logger = logging.getLogger("projector")


async def serve(settings: ProjectorSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    projector = Projector(settings, ProjectorMetrics())
    runner = web.AppRunner(create_app(projector), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    logger.info("%r, metrics on http://%s:%d/metrics", settings, settings.host, settings.port)
    try:
        # The loop sees `stop` between batches: the batch in hand is flushed and committed.
        await projector.run(stop)
    finally:
        await runner.cleanup()
    logger.info("stopped")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["universes"]:
        # Its own parser: it needs only the Kafka settings, not the projector's.
        return universes.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m projector", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="project the topics into ClickHouse (the default)")
    rebuild_parser = commands.add_parser(
        "rebuild", help="replay the whole log into fresh tables and swap them in at the end"
    )
    rebuild_parser.add_argument(
        "--drop-previous", action="store_true",
        help="drop the replaced tables 30 s after the swap (default: keep them)",
    )  # fmt: skip
    # Listed for --help only: main() hands `universes ...` to its own parser above.
    commands.add_parser(
        "universes", help="the universe registry: add, set, remove, list, key add, key remove",
        add_help=False,
    )  # fmt: skip
    accept_parser = commands.add_parser(
        "accept-log",
        help="resume a partition whose log went backwards from the log as it is now",
        description="Start a new log epoch for a partition the projectors refused because its "
        "log no longer holds what was written; what was counted stays counted.",
    )
    accept_parser.add_argument("--topic", help="the topic, e.g. tracker.sales")
    accept_parser.add_argument("--partition", type=int, help="the partition number")
    accept_parser.add_argument(
        "--all", action="store_true", help="every partition of both topics whose log went back"
    )
    accept_parser.add_argument(
        "--from-offset", type=int, metavar="OFFSET",
        help="first offset of the new log to project (default: its earliest offset)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "accept-log":
        if args.all == (args.topic is not None or args.partition is not None):
            accept_parser.error("give either --topic and --partition, or --all")
        if not args.all and (args.topic is None or args.partition is None):
            accept_parser.error("--topic and --partition go together")
        if args.all and args.from_offset is not None:
            accept_parser.error("--from-offset needs one --topic and --partition")
        if args.from_offset is not None and args.from_offset < 0:
            accept_parser.error("--from-offset must be 0 or more")
    try:
        configure_logs("projector")
        # The service gets its whole environment from whoever starts it; the operator's
        # commands run in a shell, where the local stack is the default (schemas/context.py).
        environ = shell_environ().environ if args.command in ("rebuild", "accept-log") else None
        settings = ProjectorSettings.from_env(environ)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    collector.tune()  # before the first batch: see projector/collector.py
    try:
        if args.command == "rebuild":
            uvloop.run(
                rebuild(
                    settings,
                    drop_previous=args.drop_previous,
                    write=lambda line: print(line, file=sys.stderr, flush=True),
                )
            )
        elif args.command == "accept-log":
            uvloop.run(
                accept_log(
                    settings, topic=args.topic, partition=args.partition,
                    from_offset=args.from_offset, write=lambda line: print(line, flush=True),
                )
            )  # fmt: skip
        else:
            uvloop.run(serve(settings))
    except AcceptError as e:
        print(f"accept-log: {e}", file=sys.stderr)
        return 1
    except ProjectorError as e:
        print(f"projector stopped: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
