"""The ClickHouse sink: ledger rows are added during a batch and written by ``flush``.

One insert per topic per batch, into the topic's writes table (schemas/ddl/tables.sql),
whose fence admits the rows into the intake table, whose views fan them out to its ledgers:
clicks first (a sale of this batch may be attributed to a click of this batch), then the
sales topic's calls, refunds and dead letters together. So the rows of one partition are
written by one atomic insert with their Kafka positions: whatever a crash interrupts is
either in ClickHouse with its positions or not at all. (With one insert per ledger, a crash
between a dead letter's or a refund's insert and the calls' insert moved a partition's
position past calls never written.) Every row carries its partition's fence: rows of a
partition another instance registered since are dropped by ClickHouse at insert time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from projector.errors import ProjectorError
from projector.metrics import ProjectorMetrics
from projector.rows import (
    CLICKS_COLUMNS,
    CLICKS_INTAKE,
    DEAD_LETTERS_COLUMNS,
    REFUNDS_CALLS_COLUMNS,
    SALES_CALLS_COLUMNS,
    SALES_INTAKE,
    Intake,
    Position,
    Row,
)
from projector.store import Store, dedup_token

# This instance's fence of each partition it writes, by (topic, partition).
Fences = Mapping[tuple[str, int], int]


@dataclass
class _Table:
    name: str
    intake: Intake
    fences: Fences
    rows: list[Row] = field(default_factory=list)
    # Rows per ledger, for the metric.
    ledgers: Counter[str] = field(default_factory=Counter)
    # topic[partition]#epoch~fence -> (first, last) offset of the rows added. The epoch is
    # part of the block's identity: a new log's offsets repeat the old one's, and a block of
    # the new log under the old one's token would be dropped by insert deduplication. So is
    # the fence: another owner's block of the same span is another block.
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(
        self, ledger: str, kind: str, columns: tuple[str, ...], row: Row, position: Position
    ) -> None:
        topic, partition, offset, epoch, _ = position
        fence = self.fences.get((topic, partition))
        if fence is None:
            # Unfenced rows would be dropped without a word: a partition is only written after
            # its registration (logcheck.py), so this is a bug, said loudly.
            raise ProjectorError(
                f"{topic}[{partition}]@{offset}: no fence registered for it", retriable=False
            )
        self.rows.append(self.intake.row(kind, columns, row, fence))
        self.ledgers[ledger] += 1
        where = f"{topic}[{partition}]#{epoch}~{fence:x}"
        first, _ = self.spans.get(where, (offset, offset))
        self.spans[where] = (min(first, offset), offset)

    def extent(self) -> str:
        return ",".join(f"{k}@{a}-{b}" for k, (a, b) in sorted(self.spans.items()))


class ClickHouseSink:
    def __init__(
        self,
        store: Store,
        metrics: ProjectorMetrics,
        clicks_topic: str,
        fences: Fences,
        between_inserts: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clicks_topic = clicks_topic
        self._fences = fences
        # A test hook (the checkpoint's fault injection): called between the two inserts.
        self._between_inserts = between_inserts
        self._generation = 0
        self.clear(0)

    def clear(self, generation: int) -> None:
        self._generation = generation
        self._clicks = _Table(f"clicks_writes_g{generation}", CLICKS_INTAKE, self._fences)
        self._sales = _Table(f"sales_writes_g{generation}", SALES_INTAKE, self._fences)

    def __len__(self) -> int:
        return len(self._clicks.rows) + len(self._sales.rows)

    def add_click(self, row: Row, position: Position) -> None:
        self._clicks.add("clicks", "click", CLICKS_COLUMNS, row, position)

    def add_call(self, row: Row, position: Position) -> None:
        self._sales.add("sales_calls", "call", SALES_CALLS_COLUMNS, row, position)

    def add_refund(self, row: Row, position: Position) -> None:
        self._sales.add("refunds_calls", "refund", REFUNDS_CALLS_COLUMNS, row, position)

    def add_dead_letter(self, row: Row, position: Position) -> None:
        # With the rows of its own partition: the position moves past it in their insert.
        table = self._clicks if position[0] == self._clicks_topic else self._sales
        table.add("dead_letters", "dead_letter", DEAD_LETTERS_COLUMNS, row, position)

    async def flush(self) -> None:
        """Write everything added; calling it again after a failure writes nothing twice."""
        pending = [t for t in (self._clicks, self._sales) if t.rows]
        for i, table in enumerate(pending):
            if i:
                self._between_inserts()
            token = dedup_token(table.name, table.extent())
            await self._store.insert(table.name, table.intake.columns, table.rows, token)
            for ledger, count in table.ledgers.items():
                self._metrics.rows.labels(ledger).inc(count)
            # Written: a retry of this flush must not send it again under another token.
            table.rows = []
            table.ledgers.clear()
        self.clear(self._generation)
