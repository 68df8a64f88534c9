"""Scale-out: real projector processes in one consumer group on one log. Each member holds
half of the partitions (read from its own /metrics: a partition's lag series lives only on
the member that holds it), the totals are exact, and after a SIGKILL the survivor takes
every partition over and still ends exact."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient

from bench.scale_out import assigned, scrape
from compose.processes import free_port
from helpers import produce, settled
from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.settings import ProjectorSettings
from scenario import actual, as_dict, generate, oracle

ROOT = Path(__file__).resolve().parents[2]


class Member:
    """One `python -m projector` process with its own metrics port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "projector"], cwd=ROOT,
                env={**os.environ, **env, "TRACKER_PROJECTOR_PORT": str(self.port)},
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def partitions(self) -> set[str]:
        assert self.popen.poll() is None, f"projector exited:\n{self.log.read_text()[-3000:]}"
        return assigned(scrape(self.port))


@pytest.fixture
def members(tmp_path: Path, service_env: dict[str, str]) -> Iterator[list[Member]]:
    env = {**service_env, "TRACKER_PROJECTOR_BATCH_MAX": "100"}
    started = [Member(env, tmp_path / f"projector-{i}.log") for i in range(2)]
    yield started
    for member in started:
        if member.popen.poll() is None:
            member.popen.kill()
            member.popen.wait()


def every_partition(settings: ProjectorSettings) -> set[str]:
    topics = settings.kafka.topics
    return {
        f"{topic}[{p}]"
        for topic in (topics.clicks, topics.sales)
        for p in range(settings.kafka.partitions)
    }


async def holding(members: list[Member], want: list[int], timeout: float = 60) -> list[set[str]]:
    """Each member's partitions, once they hold ``want[i]`` each (the group settled)."""
    deadline = time.monotonic() + timeout
    while True:
        held = [await asyncio.to_thread(m.partitions) for m in members]
        if [len(h) for h in held] == want:
            return held
        assert time.monotonic() < deadline, f"partitions held: {held}, want sizes {want}"
        await asyncio.sleep(0.5)


async def clicks_projected_first(settings: ProjectorSettings, seed: int, sales: int) -> tuple:  # type: ignore[type-arg]
    """Clicks written before the sales are sent (as in life), without joining the group."""
    clicks, calls = generate(seed=seed, sales=sales)
    await produce(settings, clicks)
    await asyncio.wait_for(
        Projector(settings, ProjectorMetrics(), generation=1).run(asyncio.Event(), burst=True),
        timeout=120,
    )
    return clicks, calls


async def test_two_projectors_in_one_group_each_hold_half_the_partitions_and_end_exact(
    projector_settings: ProjectorSettings, ch: AsyncClient, members: list[Member]
) -> None:
    db = projector_settings.clickhouse_database
    clicks, calls = await clicks_projected_first(projector_settings, seed=11, sales=2000)
    half = len(every_partition(projector_settings)) // 2

    first, second = await holding(members, [half, half])
    assert not first & second
    assert first | second == every_partition(projector_settings)

    await produce(projector_settings, calls)
    await settled(ch, db, len(clicks) + len(calls), timeout=120)
    assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls))
    # Both wrote: each member's sales partitions moved forward.
    rows = await ch.query(
        f"SELECT DISTINCT kafka_partition FROM {db}.sales_calls_g1 WHERE kafka_topic = "
        f"'{projector_settings.kafka.topics.sales}'"
    )
    assert len(rows.result_rows) == projector_settings.kafka.partitions


async def test_after_a_sigkill_of_one_projector_the_survivor_holds_every_partition_and_ends_exact(
    projector_settings: ProjectorSettings, ch: AsyncClient, members: list[Member]
) -> None:
    db = projector_settings.clickhouse_database
    clicks, calls = await clicks_projected_first(projector_settings, seed=13, sales=3000)
    everything = every_partition(projector_settings)
    await holding(members, [len(everything) // 2] * 2)

    doomed, survivor = members
    await produce(projector_settings, calls[: len(calls) // 2])
    await asyncio.sleep(0.5)  # both are writing
    doomed.popen.kill()
    assert await asyncio.to_thread(doomed.popen.wait, 30) == -signal.SIGKILL
    await produce(projector_settings, calls[len(calls) // 2 :])

    (taken,) = await holding([survivor], [len(everything)], timeout=90)
    assert taken == everything
    await settled(ch, db, len(clicks) + len(calls), timeout=120)
    assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls))
