"""The lag gauge follows partition ownership: a partition given up stops being exported."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import generate_latest

from projector.metrics import ProjectorMetrics


def lag_lines(metrics: ProjectorMetrics) -> list[str]:
    return [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("tracker_projector_lag{")
    ]


def test_a_partition_given_up_drops_its_lag_series() -> None:
    metrics = ProjectorMetrics()
    kept, moved = TopicPartition("t.sales", 0), TopicPartition("t.sales", 1)
    metrics.set_lag(kept, 5)
    metrics.set_lag(moved, 70_000)
    metrics.forget_lag(moved)
    assert lag_lines(metrics) == ['tracker_projector_lag{partition="0",topic="t.sales"} 5.0']
    metrics.forget_lag(moved)  # twice (a revoke after a failed check): harmless


def test_lag_is_never_negative_when_the_log_shrank() -> None:
    metrics = ProjectorMetrics()
    metrics.set_lag(TopicPartition("t.sales", 0), -3)
    assert lag_lines(metrics) == ['tracker_projector_lag{partition="0",topic="t.sales"} 0.0']
