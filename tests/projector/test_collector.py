"""The projector's collector policy: a full collection after a write, at most once per interval."""

from __future__ import annotations

import gc

from projector import collector
from projector.collector import FullCollections


def test_a_full_collection_runs_after_a_write_at_most_once_per_interval() -> None:
    now = [100.0]
    collections: list[float] = []
    full = FullCollections(5.0, clock=lambda: now[0], collect=lambda: collections.append(now[0]))
    for at in (101.0, 104.9, 105.0, 106.0, 109.9, 110.0, 131.0):
        now[0] = at
        full.after_write()
    # Counted from the last collection: 105 is 5 s after start, 110 after 105, 131 after 110.
    assert collections == [105.0, 110.0, 131.0]


def test_tuning_raises_the_thresholds_and_freezes_what_start_up_built() -> None:
    before = gc.get_threshold()
    try:
        collector.tune()
        assert gc.get_threshold() == collector.THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
