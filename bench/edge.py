"""Stage 1: the edge against bare aiohttp (its goal), the same app with the prebuilt GIF and
nginx, 1 and 2 workers; every answered request must be in Kafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import nginx, wrk
from bench.report import Results, say
from bench.scale import TARGETS, Scale
from bench.services import ROOT, peak_rss_kb, service_env, wait_http
from compose.processes import free_port
from schemas.topics import Topics


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


def run(scale: Scale, bootstrap: str, clickhouse: str, workdir: Path, results: Results) -> None:
    cores = os.cpu_count() or 1
    for workers in (1, 2):
        for target in TARGETS:
            if target == "nginx" and not nginx.available():
                say("  nginx is missing (`make tools` installs it): no nginx reference")
                continue
            port = free_port()
            prefix = f"edge{workers}{target}{uuid.uuid4().hex[:6]}"
            env = service_env(bootstrap, clickhouse, prefix, workdir, edge_port=port)
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
                row = wrk.run(f"http://127.0.0.1:{port}/sales.php", connections, scale.wrk_seconds,
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
