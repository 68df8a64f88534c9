"""`python -m ingest [serve]` runs the edge; `sign-link` prints a tracked link, `snippet` the
shop's script tag (ingest/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import uvloop
from aiohttp import web

from ingest import cli
from ingest.app import create_runner
from ingest.settings import EdgeSettings
from schemas.context import shell_environ
from schemas.environ import ConfigError
from schemas.logs import configure as configure_logs

logger = logging.getLogger("ingest")


async def serve(settings: EdgeSettings, *, worker: int, tls: ssl.SSLContext | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = create_runner(settings, worker=worker)
    await runner.setup()
    # SO_REUSEPORT: every worker process binds the same port; the kernel spreads connections.
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, ssl_context=tls)
    await site.start()
    # Every call allocates a few dozen short-lived objects (aiohttp's request, our event):
    # at the default gen-0 threshold (700) the collector ran every ~20 calls and walked the
    # app's long-lived objects when it reached the older generations. Freezing what start-up
    # built and collecting gen 0 every 50,000 allocations cut 5-15% of the CPU per call (A/B
    # pairs, pinned worker under wrk); request objects are freed by reference counting.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    scheme = "https" if tls else "http"
    logger.info(
        "edge worker %d listening on %s://%s:%d", worker, scheme, settings.host, settings.port
    )
    await stop.wait()
    logger.info("worker %d stopping: no new requests, publishing what is queued", worker)
    await runner.cleanup()
    logger.info("worker %d stopped", worker)


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the TLS certificate {cert} / key {key}: {e}") from e
    return context


def run_workers(argv: list[str], workers: int) -> int:
    """Start ``workers`` processes on the same port and relay SIGTERM/SIGINT to them.

    A worker that dies on its own takes the others down with it (SIGTERM: they drain) and
    the edge exits with its code, so whatever supervises the edge restarts all of it rather
    than leaving it silently short of a worker.
    """
    children = [
        subprocess.Popen([sys.executable, "-m", "ingest", "serve", *argv, "--worker-index", str(i)])
        for i in range(workers)
    ]
    stopping = False

    def relay(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    if not stopping:
        dead = next(i for i, child in enumerate(children) if child.poll() is not None)
        logger.error(
            "worker %d exited with code %s: stopping the other workers",
            dead, children[dead].returncode,
        )  # fmt: skip
        relay(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return max(codes, key=abs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="The tracking edge. Without a command, `serve` (its options: serve --help).",
    )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    serve_parser = commands.add_parser("serve", help="run the edge (the default)")
    serve_parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve_parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain for HTTPS")
    serve_parser.add_argument("--tls-key", type=Path, help="PEM private key for HTTPS")
    serve_parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    cli.add_parser(commands)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    try:
        if args.command == "sign-link":
            return cli.sign_link(args, shell_environ())
        if args.command == "snippet":
            return cli.snippet(args, shell_environ())
        configure_logs("edge")
        settings = EdgeSettings.from_env()
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        tls = tls_context(args.tls_cert, args.tls_key)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    if args.workers > 1 and args.worker_index is None:
        rest = argv[argv.index("serve") + 1 :] if "serve" in argv else argv
        without_workers = _drop_option(rest, "--workers")
        return run_workers(without_workers, args.workers)
    worker = args.worker_index or 0
    logger.info("%r (pid %d)", settings, os.getpid())
    uvloop.run(serve(settings, worker=worker, tls=tls))
    return 0


def _drop_option(argv: list[str], name: str) -> list[str]:
    result: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == name:
            skip = True
            continue
        if item.startswith(name + "="):
            continue
        result.append(item)
    return result


if __name__ == "__main__":
    sys.exit(main())
