"""Gray failures, each on a fresh local stack: the broker frozen (SIGSTOP) rather than gone,
the spool's disk full, the spool's bound reached, the edge killed while the broker is frozen.

Each returns a :class:`~chaos.scenarios.Result` with what happened to every call the edge
answered, and the checks the issue sets (nothing restarted, ready again in time, the loss of
a kill within half a second of traffic).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from chaos.disk import segments_bytes, small_filesystem
from chaos.load import stream
from chaos.scenarios import Result
from chaos.stack import LocalStack
from chaos.verify import settle

READY_BOUND_S = 10.0  # ready again within this of the broker's return, under load
KILL_BOUND_S = 0.5  # a SIGKILL of the edge 3 s into a freeze loses at most this much traffic


def _signal(stack: LocalStack, name: str, sig: signal.Signals) -> Callable[[], object]:
    return lambda: stack.kill(name, sig)


def _dropped(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("tracker_edge_events_dropped_total"))


def spool_limit(
    folder: Path,
    *,
    limit: str,
    rate: float = 200,
    before_s: float = 10,
    freeze_s: float = 45,
    after_s: float = 35,
) -> Result:
    """The broker SIGSTOPped for ``freeze_s`` under a stream while the spool cannot take it
    all: ``limit`` is "disk" (the spool on a real 1 MiB tmpfs) or "bound"
    (TRACKER_EDGE_SPOOL_MAX_MB=1). Memory must hold the rest: nothing lost, nothing restarted."""
    extra = {"TRACKER_EDGE_SPOOL_MAX_MB": "1"} if limit == "bound" else {}
    stack = LocalStack(folder, **extra)
    universe = f"spool{limit}"
    mount = small_filesystem(stack.spool_dir, "1m") if limit == "disk" else nullcontext()
    with mount:
        stack.up()
        looks: list[tuple[tuple[int, str], dict[str, float], set[int]]] = []

        def look() -> None:  # near the end of the freeze: the spool is as full as it gets
            before = segments_bytes(stack.spool_dir)
            metrics = stack.edge_metrics()
            disk = {before, segments_bytes(stack.spool_dir)}  # a retry may land in between
            looks.append((stack.readyz(), metrics, disk))

        try:
            stack.register(universe)
            stop, resume = before_s, before_s + freeze_s
            answered = asyncio.run(stream(
                stack.edge_url, universe=universe, rate=rate,
                duration_s=before_s + freeze_s + after_s,
                faults=[(stop, _signal(stack, "kafka", signal.SIGSTOP)), (resume - 2, look),
                        (resume, _signal(stack, "kafka", signal.SIGCONT))],
            ))  # fmt: skip
            tally = settle(stack, universe, answered, timeout=180)
            end = stack.edge_metrics()
            leftovers = sorted(
                p.name for p in stack.spool_dir.rglob("*") if p.is_file() and p.name != "cursor"
            )
            edge_restarts = stack.services().get("edge", {}).get("restarts", 0)
        finally:
            stack.kill("kafka", signal.SIGCONT)
            stack.down()
    (status, body), during, disk = looks[0] if looks else ((0, ""), {}, {-1})
    on_disk = max(disk)
    held = during.get("tracker_edge_queue_depth", 0)
    checks = {
        "memory held what the spool refused": held > 0,
        "/readyz named it": status == 503 and "events held in memory" in body,
        "spool bytes = what is on disk": during.get("tracker_edge_spool_bytes") in disk,
        "nothing dropped": _dropped(end) == 0,
        "nothing restarted": end.get("tracker_edge_publisher_restarts_total", 0) == 0
        and edge_restarts == 0,
        "drained: no segment left": end.get("tracker_edge_spool_bytes") == 0 and not leftovers,
    }
    what = "spool on a 1 MiB tmpfs" if limit == "disk" else "`TRACKER_EDGE_SPOOL_MAX_MB=1`"
    errors = during.get('tracker_edge_spool_errors_total{operation="write"}', 0)
    notes = [
        f"{freeze_s - 2:.0f} s into the freeze: {during.get('tracker_edge_spool_bytes', 0):,.0f} "
        f"spool bytes ({on_disk:,} on disk), {held:,.0f} events held in memory"
        + (f", {errors:,.0f} failed writes" if limit == "disk" else ""),
        f"/readyz: {status} {body.strip()!r}",
        f"dropped {_dropped(end):.0f}; publisher restarts "
        f"{end.get('tracker_edge_publisher_restarts_total', 0):.0f}, edge restarts {edge_restarts}",
        *(f"FAILED: {name}" for name, ok in checks.items() if not ok),
    ]
    return Result(
        f"spool {'on a full disk' if limit == 'disk' else 'bound reached'}",
        f"{what}; broker SIGSTOP {freeze_s:.0f} s during {rate:.0f} sales/s for "
        f"{before_s + freeze_s + after_s:.0f} s",
        tally, notes, checks=checks,
    )  # fmt: skip


def frozen_broker_edge_kill(
    folder: Path,
    *,
    rate: float = 200,
    before_s: float = 10,
    kill_after_s: float = 3,
    freeze_s: float = 10,
    after_s: float = 20,
) -> Result:
    """The broker SIGSTOPped, the edge SIGKILLed ``kill_after_s`` later (the supervisor
    restarts it), the broker resumed: what the kill lost of the answered calls."""
    stack = LocalStack(folder)
    universe = "freezekill"
    stack.up()
    try:
        stack.register(universe)
        stop = before_s
        answered = asyncio.run(stream(
            stack.edge_url, universe=universe, rate=rate,
            duration_s=before_s + freeze_s + after_s,
            faults=[(stop, _signal(stack, "kafka", signal.SIGSTOP)),
                    (stop + kill_after_s, _signal(stack, "edge", signal.SIGKILL)),
                    (stop + freeze_s, _signal(stack, "kafka", signal.SIGCONT))],
        ))  # fmt: skip
        tally = settle(stack, universe, answered, timeout=120, stable_s=15)
    finally:
        stack.kill("kafka", signal.SIGCONT)
        stack.down()
    window_ms = 1000 * tally.lost / rate
    checks = {f"lost at most {KILL_BOUND_S} s of traffic": tally.lost <= rate * KILL_BOUND_S}
    return Result(
        "broker frozen, edge SIGKILL",
        f"broker SIGSTOP, edge SIGKILL {kill_after_s:.0f} s later, broker SIGCONT after "
        f"{freeze_s:.0f} s, during {rate:.0f} sales/s for {before_s + freeze_s + after_s:.0f} s",
        tally,
        [f"loss window: {tally.lost} answered calls, {window_ms:.0f} ms at {rate:.0f}/s",
         f"{answered.failed} calls not answered while the edge restarted"],
        allowed_lost=int(rate * KILL_BOUND_S), checks=checks,
    )  # fmt: skip


def frozen_broker_then_load(
    folder: Path,
    *,
    rate: float = 200,
    before_s: float = 10,
    freeze_s: float = 15,
    after_s: float = 120,
) -> Result:
    """The broker SIGSTOPped ``freeze_s``, then resumed under the same steady load: how long
    until the edge is ready again, and whether new events still go through the spool."""
    stack = LocalStack(folder)
    universe = "freezeload"
    stack.up()
    seen: dict[str, float] = {}

    def resume_and_time() -> None:
        stack.kill("kafka", signal.SIGCONT)
        resumed = time.monotonic()
        while time.monotonic() - resumed < 60:
            if stack.readyz()[0] == 200:
                seen["ready after"] = time.monotonic() - resumed
                seen["spooled at ready"] = stack.edge_metrics()["tracker_edge_events_spooled_total"]
                break
            time.sleep(0.1)
        flaps = 0
        while time.monotonic() - resumed < after_s - 5:  # ready must last under the load
            flaps += stack.readyz()[0] != 200
            time.sleep(0.25)
        seen["unready probes after"] = flaps

    try:
        stack.register(universe)
        answered = asyncio.run(stream(
            stack.edge_url, universe=universe, rate=rate,
            duration_s=before_s + freeze_s + after_s,
            faults=[(before_s, _signal(stack, "kafka", signal.SIGSTOP)),
                    (before_s + freeze_s, resume_and_time)],
        ))  # fmt: skip
        tally = settle(stack, universe, answered, timeout=120)
        end = stack.edge_metrics()
    finally:
        stack.kill("kafka", signal.SIGCONT)
        stack.down()
    ready_after = seen.get("ready after")
    spooled = end["tracker_edge_events_spooled_total"]
    later = spooled - seen.get("spooled at ready", spooled)
    checks = {
        f"ready within {READY_BOUND_S:.0f} s of SIGCONT": ready_after is not None
        and ready_after <= READY_BOUND_S,
        # Back to normal: new events go straight to the broker, not through the spool (a
        # second of traffic allowed, for a batch late on a loaded machine).
        "not through the spool once ready": later <= rate,
    }
    return Result(
        "broker frozen, then steady load",
        f"broker SIGSTOP {freeze_s:.0f} s, then {after_s:.0f} s more of {rate:.0f} sales/s",
        tally,
        [("ready " + (f"{ready_after:.1f} s" if ready_after is not None else "NEVER (60 s)")
          + " after SIGCONT"),
         f"{spooled:,.0f} events went through the spool, {later:,.0f} of them once ready",
         f"{seen.get('unready probes after', 0):.0f} unready /readyz probes after that",
         *(f"FAILED: {name}" for name, ok in checks.items() if not ok)],
        checks=checks,
    )  # fmt: skip
