"""The pixel's events are made by the publishing task, a batch at a time (ingest/backlog.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.backlog import MAKE_STEPS, Backlog, Entry
from ingest.message import Message
from ingest.metrics import EdgeMetrics
from ingest.settings import EdgeSettings


def numbered(i: int) -> Message:
    if i == 13:
        raise RuntimeError("a bug in making the event")
    return Message("t.sales", b"k", str(i).encode())


@pytest.mark.parametrize("size", [1, 7, 240, 20_000])
async def test_a_batch_of_any_size_is_made_in_order_in_a_fixed_number_of_steps(
    size: int, edge_settings: EdgeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Steps of a fixed size fell behind under load: each pause lets the event loop take as
    # many new calls as there are connections, so the queue grew without bound.
    metrics = EdgeMetrics()
    queue = Backlog(edge_settings, metrics, tmp_path)
    pauses = 0
    sleep = asyncio.sleep

    async def counted(delay: float) -> None:
        nonlocal pauses
        pauses += 1
        await sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", counted)
    # Every third entry an event made at once (the API's and the click's), the rest deferred.
    entries: list[Entry] = [
        numbered(i) if i % 3 == 0 else (numbered, i, "sales") for i in range(size)
    ]
    made = await queue._made_in_steps(entries)
    monkeypatch.undo()
    assert pauses == min(size, MAKE_STEPS) - 1
    assert [m.value for m in made] == [str(i).encode() for i in range(size) if i != 13]
    # The one that failed is counted as its endpoint's handler error, not published.
    errors = metrics.registry.get_sample_value(
        "tracker_edge_handler_errors_total", {"endpoint": "sales"}
    )
    assert (errors or 0) == (1 if size > 13 else 0)
