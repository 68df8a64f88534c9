"""A/B of the projector on one log: ``python -m bench.ab --events N --pairs K --a VAR=V ...
--b VAR=V ... [--a-tree DIR] [--b-tree DIR]``.

Both arms rebuild the same produced log into a database of their own, in pairs whose order
alternates (AB, BA, AB, ...), so a slow minute of the shared machine hits both. Each run is
judged by CPU per event, the projector's (wait4) and ClickHouse's (/proc, counted until its
merges of the run have finished: a setting that only defers merge work gains nothing), and
shown with its wall-clock rate and the projector's peak RSS. Totals are checked against the
oracle on every run. An arm's ``--*-tree`` runs the projector of another source tree (an
exported commit), so code changes are compared the same way as settings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import clickhouse_connect

from bench import services
from bench.cpu import cpu_seconds
from bench.projector import check_totals, produce, run_rebuild
from bench.report import say
from bench.services import ROOT, service_env
from bench.workload import generate
from schemas.topics import Topics


def merges_done(clickhouse: str, database: str, timeout: float = 60.0) -> None:
    """Wait until ClickHouse runs no merge of ``database`` (twice in a row, 0.5 s apart)."""
    client = clickhouse_connect.get_client(dsn=clickhouse)
    try:
        quiet, deadline = 0, time.monotonic() + timeout
        while quiet < 2 and time.monotonic() < deadline:
            running = client.query(
                "SELECT count() FROM system.merges WHERE database = {db:String}",
                parameters={"db": database},
            ).result_rows[0][0]
            quiet = quiet + 1 if int(running) == 0 else 0
            time.sleep(0.5)
    finally:
        client.close()


def drop(clickhouse: str, database: str) -> None:
    """A finished run's tables go: their merges must not land in the next run's CPU."""
    client = clickhouse_connect.get_client(dsn=clickhouse)
    try:
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--a", nargs="*", default=[], help="VAR=VALUE for arm A")
    parser.add_argument("--b", nargs="*", default=[], help="VAR=VALUE for arm B")
    parser.add_argument("--a-tree", type=Path, default=ROOT)
    parser.add_argument("--b-tree", type=Path, default=ROOT)
    args = parser.parse_args()
    arms = {
        "A": (dict(v.split("=", 1) for v in args.a), args.a_tree),
        "B": (dict(v.split("=", 1) for v in args.b), args.b_tree),
    }
    with tempfile.TemporaryDirectory(prefix="tracker-ab-") as tmp:
        workdir = Path(tmp)
        stack, bootstrap, clickhouse = services.start(workdir)
        try:
            ch_pid = services.pid_of(stack, "clickhouse")
            prefix = f"ab{uuid.uuid4().hex[:8]}"
            workload = generate(args.events, customers=args.customers)
            total = len(workload.clicks) + len(workload.calls)
            asyncio.run(produce(bootstrap, Topics(f"{prefix}."), workload))
            say(f"A: {arms['A'][0]} {arms['A'][1]}\nB: {arms['B'][0]} {arms['B'][1]}")
            say(
                f"{total:,} events; arm, events/s, projector us/event, ClickHouse us/event, peak MiB"
            )
            found: dict[str, list[tuple[float, float, float, float]]] = {"A": [], "B": []}
            for pair in range(args.pairs):
                for arm in ("A", "B") if pair % 2 == 0 else ("B", "A"):
                    overrides, tree = arms[arm]
                    database = f"{prefix}_{arm.lower()}{pair}"
                    env = {
                        **service_env(bootstrap, clickhouse, prefix, workdir),
                        "TRACKER_CLICKHOUSE_DATABASE": database,
                        **overrides,
                    }
                    before = cpu_seconds(ch_pid)
                    run = run_rebuild(env, workdir / f"{database}.log", ch_pid, cwd=tree)
                    merges_done(clickhouse, database)
                    clickhouse_cpu = cpu_seconds(ch_pid) - before
                    if not check_totals(clickhouse, database, workload):
                        raise SystemExit(f"arm {arm}: totals differ from the oracle")
                    drop(clickhouse, database)
                    row = (
                        total / run.seconds,
                        run.projector_cpu_s / total * 1e6,
                        clickhouse_cpu / total * 1e6,
                        run.peak_kib / 1024,
                    )
                    found[arm].append(row)
                    say(f"  {arm} {row[0]:9,.0f} {row[1]:7.1f} {row[2]:7.1f} {row[3]:7.0f}")
            for arm, rows in found.items():
                medians = [statistics.median(column) for column in zip(*rows, strict=True)]
                say(f"{arm} median: {medians[0]:,.0f} events/s, projector {medians[1]:.1f} "
                    f"us/event, ClickHouse {medians[2]:.1f} us/event, peak RSS "
                    f"{medians[3]:.0f} MiB")  # fmt: skip
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
