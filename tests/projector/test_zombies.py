"""Zombies: two real projector processes in one group under a steady stream, each frozen in
turn (SIGSTOP) for longer than the session timeout, four times. While one is frozen the
group gives its partitions to the other; when it wakes it still holds the batch it had in
hand and writes it. Every total must still equal the oracle: nothing lost, nothing counted
twice, in the ledgers, in `sales` and in every rollup (projector/fencing.py).

Twice: frozen from outside at whatever instant the signal lands, and frozen by the fault
hook exactly between a batch's look-ups (its check of positions) and its write
(``TRACKER_PROJECTOR_FAULT=stop-before-write``, armed by SIGUSR1).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient

from bench.scale_out import assigned, scrape
from compose.processes import free_port
from helpers import Publishable, produce, settled
from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.settings import ProjectorSettings
from scenario import actual, as_dict, generate, oracle, with_refunds

ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT_MS = 3000
PAUSE_S = 8.0  # well past the session timeout: the group moves the frozen one's partitions
PAUSES = 4


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

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def partitions(self) -> set[str]:
        assert self.popen.poll() is None, f"projector exited:\n{self.text()[-3000:]}"
        return assigned(scrape(self.port))

    def stopped(self) -> bool:
        """Frozen by a SIGSTOP (its own or ours): state T in /proc."""
        stat = Path(f"/proc/{self.popen.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture
def members(
    tmp_path: Path, service_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[list[Member]]:
    env = {
        **service_env,
        "TRACKER_PROJECTOR_BATCH_MAX": "100",
        "TRACKER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        **({"TRACKER_PROJECTOR_FAULT": "stop-before-write"} if request.param == "hook" else {}),
    }
    started = [Member(env, tmp_path / f"projector-{i}.log") for i in range(2)]
    yield started
    for member in started:
        if member.popen.poll() is None:
            os.kill(member.popen.pid, signal.SIGCONT)
            member.popen.kill()
            member.popen.wait()


async def holding_half_each(members: list[Member], half: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        held = [await asyncio.to_thread(m.partitions) for m in members]
        if [len(h) for h in held] == [half, half]:
            return
        assert time.monotonic() < deadline, f"partitions held: {held}"
        await asyncio.sleep(0.5)


async def stream(
    settings: ProjectorSettings, events: Sequence[Publishable], *, chunk: int, every_s: float
) -> None:
    """``events`` in order, ``chunk`` at a time every ``every_s``: a steady load."""
    for start in range(0, len(events), chunk):
        began = time.monotonic()
        await produce(settings, events[start : start + chunk])
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - began)))


async def freeze(member: Member, *, hook: bool) -> None:
    """Freeze ``member`` for PAUSE_S: at once, or at its next batch's write (the hook)."""
    if hook:
        member.popen.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not member.stopped():
            assert time.monotonic() < deadline, f"not stopped by the hook:\n{member.text()[-2000:]}"
            await asyncio.sleep(0.02)
    else:
        os.kill(member.popen.pid, signal.SIGSTOP)
    await asyncio.sleep(PAUSE_S)
    os.kill(member.popen.pid, signal.SIGCONT)


@pytest.mark.parametrize("members", ["sigstop", "hook"], indirect=True)
async def test_two_projectors_each_frozen_in_turn_past_the_session_timeout_count_every_sale_once(
    projector_settings: ProjectorSettings,
    ch: AsyncClient,
    members: list[Member],
    request: pytest.FixtureRequest,
) -> None:
    hook = request.node.callspec.params["members"] == "hook"
    db = projector_settings.clickhouse_database
    clicks, sold = generate(seed=31, sales=9000)
    calls = with_refunds(sold, seed=31)
    # Clicks first (as in life), projected without joining the group.
    await produce(projector_settings, clicks)
    await asyncio.wait_for(
        Projector(projector_settings, ProjectorMetrics(), generation=1).run(
            asyncio.Event(), burst=True
        ),
        timeout=120,
    )
    half = projector_settings.kafka.partitions  # two topics: each member holds one topic's worth
    await holding_half_each(members, half)

    load = asyncio.create_task(stream(projector_settings, calls, chunk=50, every_s=0.4))
    try:
        for i in range(PAUSES):
            await holding_half_each(members, half)
            await asyncio.sleep(1.0)  # both are writing
            await freeze(members[i % 2], hook=hook)
        await load
    finally:
        load.cancel()

    await settled(ch, db, len(clicks) + len(calls), timeout=180)
    assert as_dict(await actual(ch, db)) == as_dict(oracle(clicks, calls))
    texts = [m.text() for m in members]
    # Each pause handed the frozen one's partitions over: the other registered them again.
    registered = await ch.query(f"SELECT owner, count() FROM {db}.fences_g1 GROUP BY owner")
    by_pid = {str(owner).rsplit(":", 1)[1]: int(n) for owner, n in registered.result_rows}
    counts = [by_pid.get(str(m.popen.pid), 0) for m in members]
    assert all(n >= PAUSES * half for n in counts), counts
    if hook:
        # Each frozen between its check and its write, and wrote when it woke.
        resumed = [t.count("fault injection: resumed at before-write") for t in texts]
        assert resumed == [PAUSES // 2, PAUSES // 2], resumed
