"""The fault scenarios, each on a fresh local stack; ``scale`` sets rates and durations.

Each returns a :class:`Result`: the faults injected and what happened to every call the
edge answered with the image (counted once, lost, doubled).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chaos.load import Answered, burst, stream
from chaos.projectors import (
    Watched,
    beside,
    fence_waits,
    holds_all_for,
    partitions_of,
    retries,
    sample_sum,
)
from chaos.stack import LocalStack
from chaos.verify import Tally, settle


@dataclass(frozen=True)
class Result:
    name: str
    faults: str
    tally: Tally
    notes: list[str] = field(default_factory=list)
    # A hard kill of the edge may lose what it held in memory: the bound for that scenario.
    allowed_lost: int = 0
    # The scenario's own checks beyond the tally (ready in time, nothing restarted, ...).
    checks: dict[str, bool] = field(default_factory=dict)
    # What the scenario expected beyond the tally and did not see (a fault not reported).
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        t = self.tally
        return (
            t.lost <= self.allowed_lost
            and t.doubled == 0
            and t.extra_calls == 0
            and t.exact
            and all(self.checks.values())
            and not self.problems
        )


def _merge(into: Answered, more: Answered) -> None:
    into.sales.update(more.sales)
    into.failed += more.failed


def restart_cycles(folder: Path, *, cycles: int = 3, per_cycle: int = 50) -> Result:
    """`make down && make up` ``cycles`` times, with new sales before and after each."""
    stack = LocalStack(folder)
    universe = "cycles"
    answered = Answered()
    stack.up()
    try:
        stack.register(universe)
        for cycle in range(cycles + 1):
            _merge(answered, asyncio.run(burst(
                stack.edge_url, universe=universe, count=per_cycle, concurrency=8,
                start=cycle * per_cycle,
            )))  # fmt: skip
            if cycle < cycles:
                stack.down()
                stack.up()
        tally = settle(stack, universe, answered)
    finally:
        stack.down()
    return Result(
        "restart cycles", f"{cycles} x `compose down` + `compose up`, {per_cycle} sales between",
        tally,
    )  # fmt: skip


def kills_under_stream(
    folder: Path, *, rate: float = 50, duration_s: float = 60, victims: tuple[str, ...] = (
        "kafka", "projector", "clickhouse",
    ),
) -> Result:  # fmt: skip
    """A steady stream while each victim in turn is SIGKILLed; the supervisor restarts it."""
    stack = LocalStack(folder)
    universe = "stream"
    stack.up()
    pids: dict[str, int] = {}
    step = duration_s / (len(victims) + 1)

    def killer(name: str) -> Callable[[], object]:
        def kill() -> None:
            pids[name] = stack.kill(name, signal.SIGKILL)

        return kill

    faults = [(step * (i + 1), killer(name)) for i, name in enumerate(victims)]
    try:
        stack.register(universe)
        answered = asyncio.run(stream(
            stack.edge_url, universe=universe, rate=rate, duration_s=duration_s, faults=faults,
        ))  # fmt: skip
        tally = settle(stack, universe, answered, timeout=180)
        restarted = [
            name for name in victims
            if stack.services().get(name, {}).get("restarts", 0) >= 1
            and stack.wait_running(name) != pids.get(name)
        ]  # fmt: skip
    finally:
        stack.down()
    notes = [f"restarted by the supervisor: {', '.join(restarted) or 'none'}"]
    if answered.failed:
        notes.append(f"{answered.failed} calls not answered")
    return Result(
        "kills under a steady stream",
        f"SIGKILL {', then '.join(victims)} during {rate:.0f} sales/s for {duration_s:.0f} s",
        tally, notes,
    )  # fmt: skip


def edge_workers(folder: Path, *, workers: int = 2, count: int = 2000) -> Result:
    """Several edge processes producing to the same partitions at once."""
    stack = LocalStack(folder, TRACKER_EDGE_WORKERS=str(workers))
    universe = "workers"
    stack.up()
    try:
        stack.register(universe)
        answered = asyncio.run(
            burst(stack.edge_url, universe=universe, count=count, concurrency=32)
        )
        tally = settle(stack, universe, answered)
    finally:
        stack.down()
    return Result(
        "edge workers", f"{workers} edge processes under {count} calls from 32 connections", tally
    )


def edge_sigkill(folder: Path, *, rate: float = 200, duration_s: float = 20) -> Result:
    """The edge SIGKILLed mid-stream: what it answered but had not yet handed to Kafka."""
    stack = LocalStack(folder)
    universe = "edgekill"
    stack.up()
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        stack.kill("edge", signal.SIGKILL)

    try:
        stack.register(universe)
        answered = asyncio.run(stream(
            stack.edge_url, universe=universe, rate=rate, duration_s=duration_s,
            faults=[(duration_s / 2, kill)],
        ))  # fmt: skip
        tally = settle(stack, universe, answered, timeout=60)
    finally:
        stack.down()
    window_ms = 1000 * tally.lost / rate
    return Result(
        "edge SIGKILL",
        f"SIGKILL the edge once during {rate:.0f} sales/s for {duration_s:.0f} s",
        tally,
        [f"loss window: {tally.lost} answered calls, {window_ms:.0f} ms at {rate:.0f}/s"],
        allowed_lost=int(rate // 2),  # what it held in memory: well under a second of traffic
    )


def clickhouse_freeze(
    folder: Path, *, rate: float = 200, duration_s: float = 60, frozen_s: float = 30
) -> Result:
    """ClickHouse SIGSTOPped mid-stream (a VM stall, a saturated disk): the projector's calls
    time out (TRACKER_CLICKHOUSE_TIMEOUT_S, 10 s by default), are logged and counted as
    retries, /readyz says ClickHouse is not answering; after SIGCONT every sale is counted
    once."""
    stack = LocalStack(folder)
    universe = "chfreeze"
    stack.up()
    projector = Watched(stack, "projector", stack.settings.projector_port)
    seen = Observed()

    def freeze() -> None:
        pid = stack.kill("clickhouse", signal.SIGSTOP)
        began = time.monotonic()
        try:
            while (elapsed := time.monotonic() - began) < frozen_s:
                status, body = projector.readyz()
                if status != 200 and "ClickHouse not answering" in body and not seen.reason:
                    seen.unready_after_s, seen.reason = elapsed, body.strip()
                seen.retries = retries(projector.metrics())
                time.sleep(0.25)
        finally:
            os.killpg(pid, signal.SIGCONT)
        resumed = time.monotonic()
        while time.monotonic() - resumed < 60:
            if projector.readyz()[0] == 200:
                seen.ready_after_s = time.monotonic() - resumed
                break
            time.sleep(0.25)

    try:
        stack.register(universe)
        before = retries(projector.metrics())
        answered = asyncio.run(stream(
            stack.edge_url, universe=universe, rate=rate, duration_s=duration_s,
            faults=[((duration_s - frozen_s) / 2, freeze)],
        ))  # fmt: skip
        tally = settle(stack, universe, answered, timeout=180)
    finally:
        stack.down()
    during = seen.retries - before
    notes = [f"{during:.0f} ClickHouse retries counted while it hung"]
    problems = [] if during >= 1 else ["no retry counted while ClickHouse hung"]
    if seen.reason:
        reason = seen.reason if len(seen.reason) <= 110 else seen.reason[:107] + "..."
        notes.append(f"/readyz 503 {seen.unready_after_s:.0f} s into the freeze: `{reason}`")
    else:
        problems.append("/readyz never said ClickHouse was not answering")
    if seen.ready_after_s is not None:
        notes.append(f"ready again {seen.ready_after_s:.1f} s after SIGCONT")
    if answered.failed:
        notes.append(f"{answered.failed} calls not answered")
    return Result(
        "ClickHouse frozen",
        f"SIGSTOP ClickHouse {frozen_s:.0f} s during {rate:.0f} sales/s for {duration_s:.0f} s",
        tally, notes + [f"PROBLEM: {p}" for p in problems], problems=problems,
    )  # fmt: skip


@dataclass
class Observed:
    """What a watcher saw of the projector during a ClickHouse freeze."""

    retries: float = 0.0
    reason: str = ""
    unready_after_s: float = 0.0
    ready_after_s: float | None = None


def projectors_paused(
    folder: Path,
    *,
    rate: float = 200,
    duration_s: float = 90,
    pauses: int = 4,
    pause_s: float = 8.0,
    hook: bool = False,
) -> Result:
    """Two projectors in one group (the stack's and a second one), each SIGSTOPped in turn for
    longer than the session timeout (3 s on the local stack) while sales stream in: at least
    ``pause_s``, and until the group has handed the frozen one's partitions to the other and
    the other has written for 2 s (the local broker takes 5-8 s to hand them over), so the
    frozen one wakes with a batch in hand that its new owner already wrote. With ``hook`` the
    stop lands exactly between a batch's look-ups and its write
    (TRACKER_PROJECTOR_FAULT=stop-before-write, armed by SIGUSR1)."""
    extra = {"TRACKER_PROJECTOR_FAULT": "stop-before-write"} if hook else {}
    stack = LocalStack(folder, **extra)
    universe = "paused-hook" if hook else "paused"
    log = folder / "second-projector.log"
    handovers: list[float] = []
    paused: list[float] = []
    problems: list[str] = []
    stack.up()
    try:
        with beside(stack, log) as members:

            def pause_in_turn() -> None:
                for i in range(pauses):
                    began = time.monotonic()
                    if not Watched.wait_split(members, partitions_of(stack), timeout=120):
                        problems.append(
                            f"the group did not share the partitions before pause {i + 1}"
                        )
                        return
                    if i:
                        handovers.append(time.monotonic() - began)
                    time.sleep(1.0)  # both are writing
                    frozen, other = members[i % 2], members[1 - i % 2]
                    # What the frozen one holds in hand is written by its new owner first.
                    handed_over = holds_all_for(other, partitions_of(stack), seconds=2.0)
                    pause = frozen.freeze(pause_s, hook=hook, until=handed_over)
                    if pause is None:
                        problems.append(f"pause {i + 1}: the hook did not stop {frozen.name}")
                        return
                    paused.append(pause)

            stack.register(universe)
            answered = asyncio.run(stream(
                stack.edge_url, universe=universe, rate=rate, duration_s=duration_s,
                faults=[(2.0, pause_in_turn)],
            ))  # fmt: skip
            tally = settle(stack, universe, answered, timeout=180)
            pages = [m.metrics() for m in members]
    finally:
        stack.down()
    fenced = sum(sample_sum(page, "tracker_projector_fenced_batches_total") for page in pages)
    registered = sum(
        sample_sum(page, "tracker_projector_fences_registered_total") for page in pages
    )
    count, longest = fence_waits(pages)
    notes = [
        f"{registered:.0f} partitions registered in {count:.0f} registrations, each waiting "
        f"<= {longest} s for writes in flight; {fenced:.0f} batches found fenced later",
    ]
    if paused:
        notes.append(
            f"each frozen {min(paused):.0f}-{max(paused):.0f} s, until the other held every "
            "partition and had written for 2 s"
        )
    if handovers:
        notes.append(f"partitions shared again {max(handovers):.0f} s after a wake at most")
    if hook:
        resumed = stack.log("projector").count("fault injection: resumed") + log.read_text(
            errors="replace"
        ).count("fault injection: resumed")
        notes.append(f"{resumed} woke between a batch's check and its write, and wrote it")
        if resumed != pauses:
            problems.append(f"{resumed} hooked pauses, not {pauses}")
    if answered.failed:
        notes.append(f"{answered.failed} calls not answered")
    how = "by the hook, at its next batch's write" if hook else "at any instant"
    return Result(
        "two projectors paused" + (" between check and write" if hook else ""),
        f"2 projectors in one group, each SIGSTOPped >= {pause_s:.0f} s in turn ({how}), "
        f"{pauses} times, session timeout 3 s, during {rate:.0f} sales/s for {duration_s:.0f} s",
        tally, notes + [f"PROBLEM: {p}" for p in problems], problems=problems,
    )  # fmt: skip
