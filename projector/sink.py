"""The ClickHouse sink: ledger rows are added during a batch and written by ``flush``.

One insert per ledger table per batch, in dependency order: dead letters, clicks (a sale of
this batch may be attributed to a click of this batch), calls, then refunds (of those
sales). Each insert is atomic and carries its Kafka positions, so whatever a crash
interrupts is either in ClickHouse with its positions or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from projector.metrics import ProjectorMetrics
from projector.rows import (
    CLICKS_COLUMNS,
    DEAD_LETTERS_COLUMNS,
    REFUNDS_CALLS_COLUMNS,
    SALES_CALLS_COLUMNS,
    Position,
    Row,
)
from projector.store import Store, dedup_token


@dataclass
class _Table:
    name: str
    columns: Sequence[str]
    rows: list[Row] = field(default_factory=list)
    # topic[partition]#epoch -> (first, last) offset of the rows added. The epoch is part of
    # the block's identity: a new log's offsets repeat the old one's, and a block of the new
    # log under the old one's token would be dropped by insert deduplication.
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, row: Row, position: Position) -> None:
        self.rows.append(row)
        topic, partition, offset, epoch, _ = position
        where = f"{topic}[{partition}]#{epoch}"
        first, _ = self.spans.get(where, (offset, offset))
        self.spans[where] = (min(first, offset), offset)

    def extent(self) -> str:
        return ",".join(f"{k}@{a}-{b}" for k, (a, b) in sorted(self.spans.items()))


class ClickHouseSink:
    def __init__(self, store: Store, metrics: ProjectorMetrics) -> None:
        self._store = store
        self._metrics = metrics
        self._generation = 0
        self._tables: list[_Table] = []
        self.clear(0)

    def clear(self, generation: int) -> None:
        self._generation = generation
        self.dead_letters = _Table(f"dead_letters_g{generation}", DEAD_LETTERS_COLUMNS)
        self.clicks = _Table(f"clicks_g{generation}", CLICKS_COLUMNS)
        self.calls = _Table(f"sales_calls_g{generation}", SALES_CALLS_COLUMNS)
        self.refunds = _Table(f"refunds_calls_g{generation}", REFUNDS_CALLS_COLUMNS)
        self._tables = [self.dead_letters, self.clicks, self.calls, self.refunds]

    def __len__(self) -> int:
        return sum(len(t.rows) for t in self._tables)

    async def flush(self) -> None:
        """Write everything added; calling it again after a failure writes nothing twice."""
        for table in self._tables:
            if table.rows:
                token = dedup_token(table.name, table.extent())
                await self._store.insert(table.name, table.columns, table.rows, token)
                self._metrics.rows.labels(table.name.rsplit("_g", 1)[0]).inc(len(table.rows))
                # Written: a retry of this flush must not send it again under another token.
                table.rows = []
        self.clear(self._generation)
