"""The adaptive batch size: grows with the lag, shrinks once caught up, within its bounds."""

from __future__ import annotations

import pytest

from projector.batching import next_batch_size
from projector.settings import ProjectorSettings
from schemas.environ import ConfigError


def sizes(lags: list[int], *, floor: int = 5000, ceiling: int = 40_000) -> list[int]:
    """The batch target after each batch, starting at ``floor``, for the lags left."""
    size, out = floor, []
    for lag in lags:
        size = next_batch_size(size, lag, floor=floor, ceiling=ceiling)
        out.append(size)
    return out


def test_a_large_backlog_grows_the_batch_to_its_ceiling_in_a_few_batches() -> None:
    assert sizes([1_000_000] * 5) == [10_000, 20_000, 40_000, 40_000, 40_000]


def test_once_caught_up_the_batch_shrinks_back_to_the_floor() -> None:
    assert sizes([1_000_000] * 3 + [0] * 4) == [
        10_000, 20_000, 40_000, 20_000, 10_000, 5000, 5000,
    ]  # fmt: skip


def test_a_lag_between_one_and_two_batches_keeps_the_size() -> None:
    assert next_batch_size(20_000, 30_000, floor=5000, ceiling=40_000) == 20_000
    assert next_batch_size(20_000, 20_000, floor=5000, ceiling=40_000) == 20_000
    assert next_batch_size(20_000, 19_999, floor=5000, ceiling=40_000) == 10_000
    assert next_batch_size(20_000, 40_000, floor=5000, ceiling=40_000) == 40_000


def test_equal_bounds_fix_the_batch_size() -> None:
    assert sizes([10**9, 0, 10**9], floor=5000, ceiling=5000) == [5000, 5000, 5000]


def env(**values: str) -> dict[str, str]:
    return {"TRACKER_SECRET": "s" * 32, **values}


def test_the_ceiling_defaults_to_40000_or_the_floor_when_that_is_larger() -> None:
    assert ProjectorSettings.from_env(env()).batch_max_behind == 40_000
    raised = env(TRACKER_PROJECTOR_BATCH_MAX="50000")
    assert ProjectorSettings.from_env(raised).batch_max_behind == 50_000


def test_a_ceiling_below_the_floor_is_refused_with_both_names() -> None:
    bad = env(TRACKER_PROJECTOR_BATCH_MAX="5000", TRACKER_PROJECTOR_BATCH_MAX_BEHIND="100")
    with pytest.raises(ConfigError, match="TRACKER_PROJECTOR_BATCH_MAX_BEHIND must be at least "
                       r"TRACKER_PROJECTOR_BATCH_MAX \(5000\), got 100"):  # fmt: skip
        ProjectorSettings.from_env(bad)
