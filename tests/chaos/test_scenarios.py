"""The README's guarantees under faults, on the real local stack (`compose up`, supervisor).

Each test starts a whole stack in its own folder on free ports, injects its faults while
traffic flows, and compares what ClickHouse counted with what the edge answered with the
image. `make chaos` runs the same scenarios longer and writes docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.scenarios import Result, edge_sigkill, edge_workers, kills_under_stream, restart_cycles


def explain(result: Result) -> str:
    return f"{result.name}: {result.tally} {result.notes}"


def test_three_down_up_cycles_with_sales_after_each_count_every_sale_once(
    tmp_path: Path,
) -> None:
    result = restart_cycles(tmp_path, cycles=3, per_cycle=40)
    assert result.tally.answered == 160, explain(result)
    assert result.ok, explain(result)


def test_sigkill_of_broker_then_projector_then_clickhouse_under_a_stream_loses_nothing(
    tmp_path: Path,
) -> None:
    result = kills_under_stream(tmp_path, rate=50, duration_s=60)
    assert result.tally.answered >= 2500, explain(result)  # the edge kept answering
    assert result.ok, explain(result)
    assert result.notes[0] == "restarted by the supervisor: kafka, projector, clickhouse"


def test_two_edge_workers_on_the_local_stack_lose_nothing(tmp_path: Path) -> None:
    result = edge_workers(tmp_path, workers=2, count=2000)
    assert result.tally.answered == 2000, explain(result)
    assert result.ok, explain(result)


@pytest.mark.parametrize("rate", [200])
def test_an_edge_sigkill_loses_only_what_it_had_not_handed_to_kafka(
    tmp_path: Path, rate: int
) -> None:
    result = edge_sigkill(tmp_path, rate=rate, duration_s=20)
    # Nothing counted twice, and the loss is bounded by the publisher's in-memory window
    # (linger plus one round trip; docs/operating.md "Publishing"): well under a second of traffic.
    assert result.tally.doubled == 0, explain(result)
    assert result.tally.lost <= rate // 2, explain(result)
    assert result.tally.exact, explain(result)
