"""The fault scenarios, each on a fresh local stack; ``scale`` sets rates and durations.

Each returns a :class:`Result`: the faults injected and what happened to every call the
edge answered with the image (counted once, lost, doubled).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chaos.load import Answered, burst, stream
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

    @property
    def ok(self) -> bool:
        t = self.tally
        return (
            t.lost <= self.allowed_lost
            and t.doubled == 0
            and t.extra_calls == 0
            and t.exact
            and all(self.checks.values())
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
