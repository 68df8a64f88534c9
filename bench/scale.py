"""What a run measures: its scale (small keeps the code working, full judges the goals), its
stages in order, and the servers the edge stage compares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    name: str
    # The edge stage: connection levels; per level a warm-up run per target (not counted),
    # then `rounds` rounds of one `wrk_seconds` run per target, interleaved (bench/edge.py).
    concurrency: tuple[int, ...]
    wrk_seconds: int
    rounds: int
    warmup_seconds: int
    events: int
    customers: int
    memory_events: tuple[int, ...]
    fresh_rate: int
    fresh_seconds: int


STAGES = ("edge", "freshness", "projector")
# The edge and its references: aiohttp's own web.Response (the goal's baseline), the same
# bare app answering with the edge's prebuilt GifResponse, and nginx's empty_gif.
TARGETS = ("baseline", "prebuilt", "nginx", "edge")
# Full scale: a 1 s warm-up and 3 rounds of 6 s, 19 s per target and level against one 15 s
# run before rounds: about 1.3x the stage's time, for ratios paired seconds apart instead of
# minutes. Small: 2 rounds of 1 s, so the test suite's run goes through the reversed order.
SCALES = {
    "small": Scale(
        "small", concurrency=(16,), wrk_seconds=1, rounds=2, warmup_seconds=1,
        events=20_000, customers=5_000, memory_events=(), fresh_rate=200, fresh_seconds=5,
    ),
    "full": Scale(
        "full", concurrency=(16, 64, 256), wrk_seconds=6, rounds=3, warmup_seconds=1,
        events=1_000_000, customers=100_000, memory_events=(5_000_000,), fresh_rate=2000,
        fresh_seconds=60,
    ),
}  # fmt: skip
