"""Exactly-once in effect: real projector processes, killed with SIGKILL at the worst moments."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient

from compose.processes import Service, free_port, http_check
from compose.stack import Stack
from helpers import Publishable, produce, running_projector, settled
from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.settings import ProjectorSettings
from scenario import T0, actual, as_dict, click, generate, oracle, with_refunds
from schemas.events import Click, SaleCall
from schemas.refunds import RefundCall

ROOT = Path(__file__).resolve().parents[2]


class Process:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "projector"],
                cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.popen.poll() is None, f"projector exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"{needle!r} not logged:\n{self.text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(timeout=60)


class Projectors:
    """Projector processes on the test's own topics and database, each on a free port."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._logs = logs
        self.started: list[Process] = []

    def start(self, *, batch_max: int, **extra: str) -> Process:
        process = Process(
            {
                **self._env,
                "TRACKER_PROJECTOR_PORT": str(free_port()),
                "TRACKER_PROJECTOR_BATCH_MAX": str(batch_max),
                **extra,
            },
            self._logs / f"projector-{len(self.started)}.log",
        )
        self.started.append(process)
        return process


@pytest.fixture
def projectors(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Projectors]:
    projectors = Projectors(service_env, tmp_path)
    yield projectors
    # A failed test must not leave a projector consuming (and logging) into the next one.
    for process in projectors.started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()


async def clicks_projected_first(
    settings: ProjectorSettings, *, seed: int, sales: int
) -> tuple[list[Click], list[SaleCall | RefundCall]]:
    """A scenario whose clicks are projected before its sales are sent (as in life), replayed
    without joining the group, so that only the processes under test hold partitions. Its
    sales come with refunds of every kind (partial, full, duplicate refund ids, before their
    sale, above what is left, of unknown transactions)."""
    clicks, sold = generate(seed=seed, sales=sales)
    calls = with_refunds(sold, seed=seed)
    await produce(settings, clicks)
    await asyncio.wait_for(
        Projector(settings, ProjectorMetrics(), generation=1).run(asyncio.Event(), burst=True),
        timeout=120,
    )
    return clicks, calls


@pytest.mark.parametrize("stage", ["before-write", "after-write", "after-commit"])
async def test_projector_killed_at_any_checkpoint_stage_restarts_to_the_same_totals(
    stage: str, projector_settings: ProjectorSettings, ch: AsyncClient, projectors: Projectors
) -> None:
    db = projector_settings.clickhouse_database
    clicks, calls = await clicks_projected_first(projector_settings, seed=3, sales=1500)
    await produce(projector_settings, calls)

    doomed = projectors.start(
        batch_max=200, TRACKER_PROJECTOR_FAULT=stage, TRACKER_PROJECTOR_FAULT_AFTER_BATCHES="3"
    )
    assert await asyncio.to_thread(doomed.popen.wait, 120) == -signal.SIGKILL
    assert f"fault injection: SIGKILL at {stage} of batch 3" in doomed.text()
    written = (
        await ch.query(
            f"SELECT (SELECT count() FROM {db}.sales_calls) + (SELECT count() FROM {db}.refunds_calls)"
        )
    ).result_rows[0][0]
    assert written < len(calls)  # it really died half-way

    projectors.start(batch_max=200)
    await settled(ch, db, len(clicks) + len(calls), timeout=120)
    expected = oracle(clicks, calls)
    assert expected.refund_calls.keys() == {"counted", "duplicate", "rejected"}
    assert as_dict(await actual(ch, db)) == as_dict(expected)


async def test_projector_killed_between_its_two_inserts_loses_no_call_refund_or_dead_letter(
    projector_settings: ProjectorSettings, ch: AsyncClient, projectors: Projectors
) -> None:
    """A batch is written in two inserts (clicks, then the sales topic's calls, refunds and
    dead letters together). Killed between them, and with undecodable messages and refunds
    among the calls of each partition, nothing is lost nor doubled. Written as one insert per
    ledger, a dead letter's or refund's insert moved its partition's position past calls of
    the same batch that the kill left unwritten: those calls were skipped on restart."""
    db = projector_settings.clickhouse_database
    clicks, calls = await clicks_projected_first(projector_settings, seed=4, sales=1200)
    # Clicks of visitors who never buy land in the same batches as the calls (so each batch
    # writes both inserts) without changing any sale's attribution.
    ghosts = [click(f"ghost-{i}", f"ghost-{i}", "ghost", "l", at=T0 + i) for i in range(len(calls))]
    junk: list[tuple[bytes, bytes]] = []
    stream: list[Publishable] = []
    for i, call in enumerate(calls):
        stream += [call, ghosts[i]]
        if i % 20 == 7:  # undecodable: a dead letter among the calls of its partition
            junk.append((f"junk-{i}".encode(), b"\xff not an event %d" % i))
            stream.append(junk[-1])
    await produce(projector_settings, stream)

    doomed = projectors.start(
        batch_max=200, TRACKER_PROJECTOR_FAULT="between-inserts",
        TRACKER_PROJECTOR_FAULT_AFTER_BATCHES="3",
    )  # fmt: skip
    assert await asyncio.to_thread(doomed.popen.wait, 120) == -signal.SIGKILL
    assert "fault injection: SIGKILL at between-inserts" in doomed.text()

    projectors.start(batch_max=200)
    everything = len(clicks) + len(ghosts) + len(calls) + len(junk)
    await settled(ch, db, everything, timeout=180)
    assert as_dict(await actual(ch, db)) == as_dict(oracle([*clicks, *ghosts], calls))
    dead = await ch.query(
        f"SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM {db}.dead_letters"
    )
    assert dead.result_rows[0] == (len(junk), len(junk))


async def test_two_projectors_share_the_work_and_one_killed_midway_loses_nothing(
    projector_settings: ProjectorSettings, ch: AsyncClient, projectors: Projectors
) -> None:
    db = projector_settings.clickhouse_database
    clicks, calls = await clicks_projected_first(projector_settings, seed=5, sales=3000)

    first = projectors.start(batch_max=50)
    first.wait_for_log("partitions assigned")
    second = projectors.start(batch_max=50)
    # The group rebalanced: each member holds part of the partitions.
    second.wait_for_log("partitions assigned")
    assert "partitions revoked" in first.text()

    half = len(calls) // 2
    await produce(projector_settings, calls[:half])
    await asyncio.sleep(0.5)  # both members are writing
    first.popen.kill()
    assert await asyncio.to_thread(first.popen.wait, 30) == -signal.SIGKILL
    await produce(projector_settings, calls[half:])

    await settled(ch, db, len(clicks) + len(calls), timeout=120)
    assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls))
    second.stop()
    assert second.popen.returncode == 0


async def test_a_clickhouse_outage_pauses_the_projector_and_loses_nothing(
    tmp_path: Path, projector_settings: ProjectorSettings
) -> None:
    port = free_port()
    clickhouse = Service(
        name="clickhouse-own",
        argv=[sys.executable, "-m", "compose.clickhouse_server",
              "--data-dir", str(tmp_path / "ch"), "--port", str(port)],
        cwd=ROOT, health=http_check(f"http://127.0.0.1:{port}/ping", "Ok."),
    )  # fmt: skip
    stack = Stack([clickhouse], tmp_path / "logs")
    stack.start()
    settings = dataclasses.replace(projector_settings, clickhouse_url=f"http://127.0.0.1:{port}")
    db = settings.clickhouse_database
    clicks, calls = generate(seed=9, sales=600)
    try:
        async with running_projector(settings) as projector:
            ch = await clickhouse_connect.get_async_client(dsn=settings.clickhouse_url)
            await produce(settings, clicks)
            await settled(ch, db, len(clicks))
            await produce(settings, calls[:300])
            await settled(ch, db, len(clicks) + 300)
            await ch.close()

            await asyncio.to_thread(clickhouse.stop)  # ClickHouse goes away mid-stream
            await produce(settings, calls[300:])
            await asyncio.sleep(3)  # the projector backs off and retries meanwhile
            await asyncio.to_thread(clickhouse.start, tmp_path / "logs")
            await asyncio.to_thread(clickhouse.wait_healthy)

            ch = await clickhouse_connect.get_async_client(dsn=settings.clickhouse_url)
            try:
                await settled(ch, db, len(clicks) + len(calls), timeout=120)
                assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls))
            finally:
                await ch.close()
            retried = sum(
                sample.value
                for metric in projector.metrics.registry.collect()
                if metric.name == "tracker_projector_clickhouse_retries"
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
            assert retried >= 1  # the outage shows on /metrics
    finally:
        stack.stop()
