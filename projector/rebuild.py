"""`python -m projector rebuild`: replay the whole log into fresh tables, then swap them in.

The replay writes a new generation of every table while the live one keeps serving; when it
has caught up, one step points every public view at it and live projectors follow at their
next batch (rewinding to where the new tables end, see positions.py). Clicks are replayed
before sales, so a sale attributed from stored clicks sees every click that preceded it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from projector.loop import Projector
from projector.metrics import ProjectorMetrics
from projector.settings import ProjectorSettings
from projector.store import Store

logger = logging.getLogger(__name__)


class Progress:
    def __init__(self, write: Callable[[str], None], every_s: float = 1.0) -> None:
        self._write = write
        self._every_s = every_s
        self._last = 0.0
        self._started = time.monotonic()

    async def __call__(self, consumer: AIOKafkaConsumer, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self._every_s:
            return
        self._last = now
        done = total = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp) or 0
            total += highwater
            done += min(highwater, await consumer.position(tp))
        rate = done / max(now - self._started, 1e-6)
        percent = 100.0 * done / total if total else 100.0
        self._write(f"rebuild: {done:,}/{total:,} events ({percent:.1f}%), {rate:,.0f}/s")


async def rebuild(
    settings: ProjectorSettings,
    *,
    drop_previous: bool = False,
    grace_s: float = 30.0,
    write: Callable[[str], None] = print,
) -> int:
    """Build generation live+1 from the earliest offsets, activate it; return its number."""
    store = await Store.open(settings)
    try:
        live = await store.prepare()
        target = live + 1
        # A rebuild that died half-way left tables behind: start them over.
        await store.drop_generation(target)
        await store.create_generation(target)
        write(f"rebuild: live generation {live}, building generation {target}")
        stop = asyncio.Event()
        for topics in (
            (settings.kafka.topics.clicks,),
            (settings.kafka.topics.clicks, settings.kafka.topics.sales),
        ):
            projector = Projector(
                settings, ProjectorMetrics(), generation=target, topics=topics,
                progress=Progress(write),
            )  # fmt: skip
            await projector.run(stop, burst=True)
        await store.activate(target)
        write(f"rebuild: generation {target} is live; every view now reads it")
        if drop_previous:
            # Live projectors finish the batch they started against the old tables first.
            await asyncio.sleep(grace_s)
            await store.drop_generation(live)
            write(f"rebuild: dropped generation {live}")
        else:
            write(f"rebuild: generation {live} kept; `rebuild --drop-previous` drops it next time")
        return target
    finally:
        await store.close()
