"""What ClickHouse already holds, as a batch needs it: positions, counted transactions and
stored clicks, with the bounded cache of counted transactions in front of ClickHouse."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from aiokafka import TopicPartition

from projector.attribution import customer_of, qualifying_carried
from projector.decode import Events
from projector.dedupe import CountedCache, DedupeKey, dedupe_key
from projector.positions import Stored
from projector.project import Facts
from projector.refunds import Refunded, SaleFacts
from projector.retry import Retrying
from projector.store import Store
from schemas.events import ClickContext, SaleCall
from schemas.refunds import SaleKey


class Lookups:
    def __init__(
        self,
        store: Store,
        retrying: Retrying,
        cache: CountedCache,
        window_ms: Callable[[str], int],
    ) -> None:
        self._store = store
        self._retrying = retrying
        self._cache = cache
        self._window_ms = window_ms

    async def facts(self, generation: int, events: Events) -> Facts:
        """Everything :func:`projector.project.project` needs to know about ``events``."""
        calls = [call for call, _ in events.calls]
        # The look-ups do not depend on each other: one concurrent round trip. The last ones
        # may cover records the plan then skips; extra answers are facts all the same.
        (positions, fences), counted, clicks, (sales, refunded) = await asyncio.gather(
            self._retrying(
                "read positions",
                lambda: self._store.positions_and_fences(generation, events.spans),
            ),
            self._counted(generation, calls),
            self._stored_clicks(generation, calls),
            self._refunded(generation, events),
        )
        return Facts(generation, positions, counted, clicks, sales, refunded, fences)

    async def _refunded(
        self, generation: int, events: Events
    ) -> tuple[dict[SaleKey, SaleFacts], dict[SaleKey, Refunded]]:
        """The counted sales and refunds of the transactions the batch's refunds name (none
        asked for a batch without refunds: nearly every batch)."""
        keys = {r.sale for r, _ in events.refunds if r.status == "accepted"}
        if not keys:
            return {}, {}
        return await self._retrying(
            "look up refunded sales", lambda: self._store.refunded(generation, keys)
        )

    def remember(self, counted: Iterable[tuple[DedupeKey, str]]) -> None:
        """Transactions counted by a write that landed: later batches need not ask."""
        self._cache.put_all(counted)

    async def live_generation(self) -> int:
        return await self._retrying("read the live generation", self._store.live_generation)

    async def positions(
        self, generation: int, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, Stored]:
        return await self._retrying(
            "read positions", lambda: self._store.positions(generation, partitions)
        )

    async def _counted(self, generation: int, calls: list[SaleCall]) -> dict[DedupeKey, str]:
        """What is already counted among the calls' keys: from the cache, else ClickHouse."""
        known: dict[DedupeKey, str] = {}
        unknown: set[DedupeKey] = set()
        for call in calls:
            if call.status != "accepted":
                continue
            key = dedupe_key(call)
            event_id = self._cache.get(key)
            if event_id is None:
                unknown.add(key)
            else:
                known[key] = event_id
        if unknown:
            found = await self._retrying(
                "look up counted transactions", lambda: self._store.counted(generation, unknown)
            )
            self._cache.put_all(found.items())
            known.update(found)
        return known

    async def _stored_clicks(self, generation: int, calls: list[SaleCall]) -> list[ClickContext]:
        """Stored clicks of the customers whose accepted sales carry no qualifying click."""
        window = self._window_ms
        needing = [
            call
            for call in calls
            if call.status == "accepted"
            and customer_of(call)
            and qualifying_carried(call, window(call.universe)) is None
        ]
        if not needing:
            return []
        customers = {(c.universe, customer_of(c)) for c in needing}
        since = min(c.received_at_ms - window(c.universe) for c in needing)
        until = max(c.received_at_ms for c in needing)
        return await self._retrying(
            "look up clicks", lambda: self._store.clicks_of(generation, customers, since, until)
        )
