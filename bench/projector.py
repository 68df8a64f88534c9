"""Stage 3: the projector from an empty ClickHouse to caught up, against its two limits on
the same data (bare fetch + decode, bare insert), its totals against the oracle, and its
memory over a larger log."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import kafka_engine, scale_out
from bench.clickhouse_profile import profile
from bench.cpu import cpu_seconds
from bench.oracle import oracle
from bench.report import Results, say
from bench.scale import Scale
from bench.services import ROOT, SECRET, peak_rss_kb, service_env
from bench.workload import Workload, as_raw, click_as_raw, generate
from schemas.events import Click
from schemas.raw import encode_raw
from schemas.topics import Topics, ensure_topics


async def produce(bootstrap: str, topics: Topics, workload: Workload) -> float:
    await ensure_topics((bootstrap,), topics, partitions=4, replication=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10,
                                max_batch_size=512 * 1024, compression_type="lz4")  # fmt: skip
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for event in workload.events():
            # As the edge publishes since schema version 2: the calls as received, which
            # the projector interprets (that work is part of what is measured).
            if isinstance(event, Click):
                topic, raw = topics.clicks, encode_raw(click_as_raw(event, SECRET))
            else:
                topic, raw = topics.sales, encode_raw(as_raw(event, SECRET))
            pending.append(await producer.send(topic, raw, key=event.kafka_key()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def bare_consume(bootstrap: str, topics: Topics, total: int) -> float:
    """Limit 1: fetch and orjson-decode every event, nothing else."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=5000)  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(t, p) for t in (topics.clicks, topics.sales)
                      for p in consumer.partitions_for_topic(t) or ()]  # fmt: skip
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started = time.perf_counter()
        seen = 0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for record in records:
                    orjson.loads(record.value)
                seen += sum(1 for _ in records)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def bare_insert(clickhouse: str, database: str, generation: int) -> tuple[int, float]:
    """Limit 2: insert the ledger rows the projector wrote, as they are, into a plain table."""
    client = clickhouse_connect.get_client(dsn=clickhouse)
    try:
        columns = (f"sales_calls_g{generation}", f"clicks_g{generation}")
        elapsed, total = 0.0, 0
        for table in columns:
            result = client.query(f"SELECT * FROM {database}.{table}")
            names, rows = result.column_names, result.result_rows
            target = f"{database}.bare_{table}"
            client.command(
                f"CREATE TABLE {target} AS {database}.{table} ENGINE = MergeTree ORDER BY tuple()"
            )
            started = time.perf_counter()
            for i in range(0, len(rows), 5000):
                client.insert(target, rows[i : i + 5000], column_names=list(names))
            elapsed += time.perf_counter() - started
            total += len(rows)
        return total, elapsed
    finally:
        client.close()


@dataclass(frozen=True)
class Measured:
    """One projector process's run: wall time, peak memory, CPU, and progress over time."""

    seconds: float
    peak_kib: int
    # CPU seconds of the projector process (wait4) and of the ClickHouse server (/proc).
    projector_cpu_s: float
    clickhouse_cpu_s: float
    # (seconds since start, events done) as the rebuild reported them, about once a second.
    series: list[tuple[float, int]] = field(default_factory=list)


_PROGRESS = re.compile(r"rebuild: ([\d,]+)/[\d,]+ events")


def run_rebuild(
    env: dict[str, str], log_path: Path, clickhouse_pid: int, cwd: Path = ROOT
) -> Measured:
    """The projector, as a process, from an empty ClickHouse to caught up.

    The peak is the process's own VmHWM, polled while it runs. Not wait4's ru_maxrss: that
    counts the forked child before exec, i.e. this benchmark process with its whole
    generated workload in memory (it reported 3.1 GiB for a projector that used 340 MiB).
    Its CPU is wait4's (utime + stime), ClickHouse's read from /proc before and after.
    ``cwd``: the tree whose projector runs (an A/B runs an exported older commit).
    """
    clickhouse_before = cpu_seconds(clickhouse_pid)
    started = time.perf_counter()
    peak, series, seen = 0, [], 0
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "projector", "rebuild"], cwd=cwd,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        with log_path.open() as progress:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                peak = max(peak, peak_rss_kb(process.pid))
                for line in progress.read().splitlines():
                    if match := _PROGRESS.search(line):
                        seen = max(seen, int(match.group(1).replace(",", "")))
                        series.append((round(time.perf_counter() - started, 2), seen))
                time.sleep(0.2)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"projector rebuild failed:\n{log_path.read_text()[-3000:]}")
    return Measured(
        elapsed, peak, usage.ru_utime + usage.ru_stime,
        cpu_seconds(clickhouse_pid) - clickhouse_before, series,
    )  # fmt: skip


def check_totals(clickhouse: str, database: str, workload: Workload) -> bool:
    want = oracle(workload.clicks, workload.calls)
    client = clickhouse_connect.get_client(dsn=clickhouse)
    try:
        got_campaign = {
            (u, k, cur): [int(p), Decimal(t)]
            for u, k, cur, p, t in client.query(
                "SELECT universe, campaign_id, currency, purchases, turnover "
                f"FROM {database}.campaign_turnover"
            ).result_rows
        }
        counted = client.query(f"SELECT count(), sum(amount) FROM {database}.sales").result_rows[0]
        calls = client.query(f"SELECT count() FROM {database}.sales_calls").result_rows[0][0]
        customers = client.query(f"SELECT count() FROM {database}.customer_turnover").result_rows[
            0
        ][0]
    finally:
        client.close()
    checks = {
        "sales": (int(counted[0]), want.sales),
        "turnover": (Decimal(counted[1]), want.turnover),
        "calls": (int(calls), sum(want.calls.values())),
        "customers": (int(customers), len(want.customer)),
        "campaigns": (got_campaign == want.campaign, True),
    }
    ok = all(a == b for a, b in checks.values())
    for name, (got, wanted) in checks.items():
        if got != wanted:
            say(f"  MISMATCH {name}: got {got}, expected {wanted}")
    return ok


def run(
    scale: Scale, bootstrap: str, clickhouse: str, workdir: Path, results: Results,
    save: Callable[[], None], clickhouse_pid: int,
) -> None:  # fmt: skip
    prefix = f"proj{uuid.uuid4().hex[:8]}"
    topics = Topics(f"{prefix}.")
    workload = generate(scale.events, customers=scale.customers)
    total = len(workload.clicks) + len(workload.calls)
    produce_s = asyncio.run(produce(bootstrap, topics, workload))
    say(f"  produced {total:,} events in {produce_s:.1f}s ({total / produce_s:,.0f}/s)")
    consume_s = asyncio.run(bare_consume(bootstrap, topics, total))
    say(f"  limit 1, bare fetch + orjson: {total / consume_s:,.0f} events/s")
    env = service_env(bootstrap, clickhouse, prefix, workdir)
    since = int(time.time())
    run = run_rebuild(env, workdir / f"{prefix}-rebuild.log", clickhouse_pid)
    elapsed = run.seconds
    database = prefix
    results.clickhouse_profile = profile(clickhouse, database, since, elapsed)
    # On an empty database, rebuild creates generation 1 (empty) and builds generation 2.
    ok = check_totals(clickhouse, database, workload)
    rows, insert_s = bare_insert(clickhouse, database, generation=2)
    say(f"  limit 2, bare insert of the {rows:,} ledger rows: {rows / insert_s:,.0f} rows/s")
    rate = total / elapsed
    limit = min(total / consume_s, rows / insert_s)
    results.projector = {
        "events": total, "seconds": round(elapsed, 2), "events_per_s": round(rate),
        "limit_consume": round(total / consume_s), "limit_insert": round(rows / insert_s),
        "ratio": round(rate / limit, 3), "exact": ok,
        "projector_cpu_us_per_event": round(run.projector_cpu_s / total * 1e6, 1),
        "clickhouse_cpu_us_per_event": round(run.clickhouse_cpu_s / total * 1e6, 1),
        "series": run.series,
    }  # fmt: skip
    results.memory[f"projector_peak_rss_mib_{total}"] = round(run.peak_kib / 1024, 1)
    say(f"  projector: {total:,} events in {elapsed:.1f}s = {rate:,.0f}/s, "
        f"{rate / limit:.2f} of the smaller limit; totals {'exact' if ok else 'WRONG'}; "
        f"CPU per event: projector {run.projector_cpu_s / total * 1e6:.1f} us, ClickHouse "
        f"{run.clickhouse_cpu_s / total * 1e6:.1f} us; peak RSS {run.peak_kib / 1024:.0f} MiB")  # fmt: skip
    if not ok:
        raise SystemExit("the projector's totals differ from the generator's: benchmark failed")
    save()
    say("  the Kafka table engine on the same log")
    results.kafka_engine = kafka_engine.run(bootstrap, clickhouse, topics, workload, clickhouse_pid)
    save()
    say("  two projector processes in one group on the same log")
    results.scale_out = scale_out.run(
        bootstrap, clickhouse, prefix, workload, workdir, check_totals, round(rate)
    )
    save()
    for events in scale.memory_events:
        big = generate(events, customers=1_000_000, seed=2)
        memory_prefix = f"mem{uuid.uuid4().hex[:8]}"
        asyncio.run(produce(bootstrap, Topics(f"{memory_prefix}."), big))
        big_run = run_rebuild(
            service_env(bootstrap, clickhouse, memory_prefix, workdir),
            workdir / f"{memory_prefix}-rebuild.log", clickhouse_pid,
        )  # fmt: skip
        results.memory[f"projector_peak_rss_mib_{events}"] = round(big_run.peak_kib / 1024, 1)
        results.projector["large"] = {
            "events": events, "events_per_s": round(events / big_run.seconds),
            "projector_cpu_us_per_event": round(big_run.projector_cpu_s / events * 1e6, 1),
            "clickhouse_cpu_us_per_event": round(big_run.clickhouse_cpu_s / events * 1e6, 1),
        }  # fmt: skip
        say(f"  projector over {events:,} events ({len(big.calls):,} calls, 1M customers): "
            f"peak RSS {big_run.peak_kib / 1024:.0f} MiB, {events / big_run.seconds:,.0f} events/s")  # fmt: skip
        save()
