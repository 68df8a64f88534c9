"""What a run measures: its scale (small keeps the code working, full judges the goals), its
stages in order, and the servers the edge stage compares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    name: str
    concurrency: tuple[int, ...]
    wrk_seconds: int
    events: int
    customers: int
    memory_events: tuple[int, ...]
    fresh_rate: int
    fresh_seconds: int


STAGES = ("edge", "freshness", "projector")
# The edge and its references: aiohttp's own web.Response (the goal's baseline), the same
# bare app answering with the edge's prebuilt GifResponse, and nginx's empty_gif.
TARGETS = ("baseline", "prebuilt", "nginx", "edge")
SCALES = {
    "small": Scale("small", (16,), 3, 20_000, 5_000, (), 200, 5),
    "full": Scale("full", (16, 64, 256), 15, 1_000_000, 100_000, (5_000_000,), 2000, 60),
}
