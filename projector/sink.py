"""The ClickHouse sink: rows are added per table during a batch, written by ``flush``.

Nothing reaches ClickHouse before ``flush`` and the loop commits offsets only after it
returned: a crash anywhere before the commit makes the batch be read and written again, and
the insert deduplication token (derived from the batch's offsets) makes that write a no-op.
"""

from __future__ import annotations

import logging

from clickhouse_connect.driver.asyncclient import AsyncClient

from projector.clickhouse import dedup_token, insert
from projector.metrics import ProjectorMetrics
from projector.rows import SALES_CALLS_COLUMNS, SALES_COLUMNS, Row, sale_row, sales_call_row
from schemas.events import SaleCall

logger = logging.getLogger(__name__)


class ClickHouseSink:
    def __init__(self, client: AsyncClient, database: str, metrics: ProjectorMetrics) -> None:
        self._client = client
        self._database = database
        self._metrics = metrics
        self._calls: list[Row] = []
        self._sales: list[Row] = []

    def add_sale_call(self, call: SaleCall, partition: int, offset: int) -> None:
        self._calls.append(sales_call_row(call, partition, offset))
        sale = sale_row(call)
        if sale is not None:
            self._sales.append(sale)

    async def flush(self, extent: str) -> None:
        """Write everything added; safe to call again with the same extent after a failure."""
        for table, columns, rows in (
            ("sales_calls", SALES_CALLS_COLUMNS, self._calls),
            ("sales", SALES_COLUMNS, self._sales),
        ):
            if rows:
                await insert(
                    self._client,
                    database=self._database,
                    table=table,
                    columns=columns,
                    rows=rows,
                    token=dedup_token(table, extent),
                )
                self._metrics.rows.labels(table).inc(len(rows))
        self._calls = []
        self._sales = []
