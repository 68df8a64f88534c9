"""How many events the next batch takes: more while the projector is behind (fewer and larger
inserts, so fewer parts for ClickHouse to write and merge, each insert's fixed cost spread
over more rows), back down once it has caught up (a small batch is written sooner)."""

from __future__ import annotations


def next_batch_size(current: int, lag: int, *, floor: int, ceiling: int) -> int:
    """The next batch's size, from this one's and the lag left after it.

    Doubles while at least two more batches wait, halves once less than one does, and stays
    within ``[floor, ceiling]``: a burst grows it in a few batches, and a caught-up live
    projector is back at ``floor`` within a few batches too. ``floor == ceiling`` fixes it.
    """
    if lag >= 2 * current:
        wanted = current * 2
    elif lag < current:
        wanted = current // 2
    else:
        wanted = current
    return max(floor, min(ceiling, wanted))
