"""Serve ClickHouse 26.9 over HTTP from the chdb-core wheel (no Docker, no system package).

chdb is clickhouse-local in a shared library. Its one-shot query call reads ``config.xml``
from the working directory; ``SYSTEM START LISTEN HTTP`` opens the HTTP port, and a query
that never returns keeps the engine (and so the listener) alive. The query runs in a worker
thread because a thread blocked in C never runs Python signal handlers; the main thread
waits for SIGTERM/SIGINT and ends the blocking query with ``KILL QUERY`` over HTTP.

Usage: ``python -m compose.clickhouse_server --data-dir DIR --port PORT [--system-logs]``
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

# chdb changes the working directory when imported: import it before we choose ours.
from chdb import _chdb

logger = logging.getLogger(__name__)

# A literal that only the keep-alive query contains, so KILL QUERY can target it alone
# (a broad KILL QUERY would stop the server too, which is what we want only here).
KEEPALIVE_MARK = "tracker_chdb_keepalive"
KEEPALIVE_SQL = (
    "SYSTEM START LISTEN HTTP; "  # noqa: S608 - a constant
    "SELECT number FROM system.numbers WHERE sleepEachRow(1) != 0 "
    f"AND '{KEEPALIVE_MARK}' != '' "
    "SETTINGS max_execution_time = 0, max_block_size = 1"
)


# clickhouse-local keeps no query, part or processor logs unless its config names them; the
# benchmark turns them on to see where ClickHouse's time goes (bench/clickhouse_profile.py).
# Off by default: they cost inserts and merges of their own.
SYSTEM_LOGS = (
    "query_log", "query_views_log", "part_log", "processors_profile_log",
)  # fmt: skip


def _system_log(name: str) -> str:
    return (
        f"  <{name}><database>system</database><table>{name}</table>"
        f"<flush_interval_milliseconds>7500</flush_interval_milliseconds></{name}>\n"
    )


def write_config(data_dir: Path, host: str, port: int, *, system_logs: bool = False) -> None:
    config = (
        "<clickhouse>\n"
        f"  <listen_host>{host}</listen_host>\n"
        f"  <http_port>{port}</http_port>\n"
        "  <logger><level>warning</level><console>1</console></logger>\n"
        + ("".join(_system_log(name) for name in SYSTEM_LOGS) if system_logs else "")
        + "</clickhouse>\n"
    )
    (data_dir / "config.xml").write_text(config, encoding="utf-8")


def http_query(host: str, port: int, sql: str, timeout: float = 5.0) -> str:
    request = urllib.request.Request(f"http://{host}:{port}/", data=sql.encode())
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http only
        return str(response.read().decode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compose.clickhouse_server")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument(
        "--system-logs", action="store_true",
        help="keep system.query_log, query_views_log, part_log and processors_profile_log",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s clickhouse %(message)s")

    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(data_dir)
    write_config(data_dir, args.host, args.port, system_logs=args.system_logs)

    failure: list[BaseException] = []

    def serve() -> None:
        try:
            _chdb.query(KEEPALIVE_SQL, "TabSeparated", path=str(data_dir))  # type: ignore[attr-defined]
        except BaseException as e:  # reported by the main thread, which owns the exit code
            failure.append(e)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = threading.Thread(target=serve, name="clickhouse", daemon=True)
    server.start()
    logger.info("ClickHouse HTTP on %s:%d, data in %s", args.host, args.port, data_dir)

    while not stop.is_set() and server.is_alive():
        stop.wait(0.2)
    if server.is_alive():
        logger.info("stopping")
        try:
            http_query(
                args.host,
                args.port,
                f"KILL QUERY WHERE query LIKE '%{KEEPALIVE_MARK}%' "
                "AND query NOT LIKE '%KILL%' SYNC",
            )
        except OSError as e:
            logger.warning("could not end the keep-alive query cleanly: %s", e)
        server.join(timeout=30)
        # Give the engine a moment to finish background flushes before the process exits.
        time.sleep(0.2)
        return 0
    if failure:
        print(f"clickhouse: server stopped: {failure[0]}", file=sys.stderr)
        return 1
    print("clickhouse: server stopped unexpectedly", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
