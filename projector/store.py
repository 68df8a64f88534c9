"""ClickHouse for the projector: schema, generations, look-ups and idempotent inserts.

Every failure is raised as a :class:`ProjectorError` whose ``retriable`` flag says whether
waiting can fix it (server unreachable, overloaded) or not (a bad statement, bad data).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import clickhouse_connect
import orjson
from aiokafka import TopicPartition
from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_connect.driver.external import ExternalData

from projector.dedupe import DedupeKey
from projector.errors import ProjectorError
from projector.positions import PositionRow, Stored, current_positions
from projector.refunds import Refunded, SaleFacts
from projector.rows import Row
from projector.settings import ProjectorSettings
from schemas.ddl import (
    CURRENCY,
    ROLLUPS,
    drop_statement,
    meta_statements,
    retired_names,
    table_names,
    table_statements,
    view_statements,
)
from schemas.events import ClickContext
from schemas.refunds import SaleKey

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Server errors that are about load or availability, not about our statement or data.
_RETRIABLE_CODES = ("TOO_MANY", "TIMEOUT", "MEMORY_LIMIT", "NETWORK", "SOCKET", "ABORTED")

# How often the wait for writes in flight looks again, and logs that it still waits.
_IN_FLIGHT_POLL_S = 0.05
_IN_FLIGHT_LOG_S = 5.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a call waits to connect, then for each read or send of its answer; schema
    statements (DDL) wait longer: ON CLUSTER waits for every replica."""

    connect_s: float = 5.0
    read_s: float = 10.0
    ddl_s: float = 300.0

    @classmethod
    def of(cls, settings: ProjectorSettings) -> Timeouts:
        return cls(
            float(settings.clickhouse_connect_timeout_s),
            float(settings.clickhouse_timeout_s),
            float(settings.clickhouse_ddl_timeout_s),
        )


async def _guard(what: str, action: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    try:
        return await action()
    except OperationalError as e:
        if isinstance(e.__cause__, TimeoutError):
            # A frozen or overloaded server: the socket stayed silent for the whole timeout.
            raise ProjectorError(
                f"ClickHouse not answering (nothing within {timeout_s:g} s): {what}",
                retriable=True,
            ) from e
        raise ProjectorError(f"{what}: ClickHouse unreachable: {e}", retriable=True) from e
    except DatabaseError as e:
        retriable = any(code in str(e) for code in _RETRIABLE_CODES)
        raise ProjectorError(f"{what}: {e}", retriable=retriable) from e


def json_columns(rows: Sequence[tuple[str, ...]], width: int) -> bytes:
    """Rows of text as JSONCompactColumns data, for a look-up's external table.

    A batch looks up thousands of ids: sent as external data they are neither limited by
    ``max_query_size`` nor formatted one character at a time by the client's binding, and
    orjson escapes them in C.
    """
    return orjson.dumps(list(zip(*rows, strict=True)) if rows else [[]] * width)


def _external(*tables: tuple[str, Sequence[tuple[str, ...]], str]) -> ExternalData:
    """External tables from (name, rows, structure)."""
    data = ExternalData()
    for name, rows, structure in tables:
        data.add_file(
            file_name=f"{name}.json", data=json_columns(rows, structure.count(",") + 1),
            fmt="JSONCompactColumns", structure=structure,
        )  # fmt: skip
    return data


def writes_pattern(database: str, generation: int) -> str:
    """A regular expression matching the text of an insert into ``generation``'s writes tables,
    as clickhouse-connect sends it (``INSERT INTO `db`.`sales_writes_g1` (...) FORMAT ...``)."""
    return rf"(?i)^\s*INSERT\s+INTO\s+`?{database}`?\.`?(clicks|sales)_writes_g{int(generation)}\b"


def dedup_token(table: str, extent: str) -> str:
    """The insert deduplication token of one table's block for one span of offsets.

    The same block sent again (an in-process retry after an unclear failure) carries the
    same token, and ClickHouse stores it once, in the table and in every view target.
    """
    return hashlib.sha256(f"{table}|{extent}".encode()).hexdigest()


class Store:
    def __init__(
        self,
        client: AsyncClient,
        database: str,
        cluster: str = "",
        *,
        ddl_client: AsyncClient | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self._client = client
        # Schema statements go through a client of their own, with the longer timeout.
        self._ddl_client = client if ddl_client is None else ddl_client
        self._timeouts = timeouts
        self.database = database
        # Cluster mode (see docs/cluster.md): every DDL statement runs ON CLUSTER, on
        # Replicated engines; "" is a single server.
        self.cluster = cluster

    @classmethod
    async def connect(
        cls, url: str, database: str, cluster: str = "", timeouts: Timeouts = Timeouts()
    ) -> Store:
        async def client(read_s: float) -> AsyncClient:
            return await _guard(
                "connect",
                lambda: clickhouse_connect.get_async_client(
                    dsn=url, database="default", connect_timeout=timeouts.connect_s,
                    send_receive_timeout=read_s,
                ),
                read_s,
            )  # fmt: skip

        queries = await client(timeouts.read_s)
        try:
            ddl = await client(timeouts.ddl_s)
        except BaseException:
            await queries.close()
            raise
        return cls(queries, database, cluster, ddl_client=ddl, timeouts=timeouts)

    @classmethod
    async def open(cls, settings: ProjectorSettings) -> Store:
        """The store the settings name, with their timeouts."""
        return await cls.connect(
            settings.clickhouse_url, settings.clickhouse_database,
            cluster=settings.clickhouse_cluster, timeouts=Timeouts.of(settings),
        )  # fmt: skip

    async def close(self) -> None:
        try:
            await self._client.close()
        finally:
            if self._ddl_client is not self._client:
                await self._ddl_client.close()

    async def _command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        await _guard(
            sql.split("\n", 1)[0][:80],
            lambda: self._ddl_client.command(sql, parameters),
            self._timeouts.ddl_s,
        )

    async def _rows(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        external_data: ExternalData | None = None,
    ) -> list[Any]:
        result = await _guard(
            sql[:80],
            lambda: self._client.query(sql, parameters=parameters, external_data=external_data),
            self._timeouts.read_s,
        )
        return list(result.result_rows)

    # -- schema and generations -------------------------------------------------------------

    async def prepare(self) -> int:
        """Create what is missing and return the live generation (1 on a new database)."""
        for sql in meta_statements(self.database, self.cluster):
            await self._command(sql)
        live = await self.live_generation()
        if live == 0:
            await self.create_generation(1)
            await self.activate(1)
            return 1
        if await self._rollups_before_currencies(live):
            # Its rollups cannot be split by currency after the fact (their rows already added
            # currencies up), and ClickHouse refuses today's rollup statements over them: keep
            # the rollups and views the previous version made, which still answer and keep
            # counting, until a rebuild writes a generation of today's shape.
            await self.create_generation(live, rollups=False)
            logger.warning(
                "generation %d predates per-currency rollups: its turnover views keep adding "
                "currencies up; run `python -m projector rebuild` to split them",
                live,
            )
            return live
        await self.create_generation(live)
        for sql in view_statements(self.database, live, self.cluster):
            await self._command(sql)
        return live

    async def _rollups_before_currencies(self, generation: int) -> bool:
        """Whether a rollup table of ``generation`` exists without its currency column."""
        rows = await self._rows(
            "SELECT count() FROM system.tables WHERE database = {db:String} "
            "AND name IN {tables:Array(String)} AND name NOT IN ("
            "SELECT table FROM system.columns WHERE database = {db:String} "
            "AND name = {column:String})",
            {
                "db": self.database,
                "tables": [f"{r.table}_g{int(generation)}" for r in ROLLUPS],
                "column": CURRENCY.name,
            },
        )
        return bool(rows) and int(rows[0][0]) > 0

    async def live_generation(self) -> int:
        rows = await self._rows(f"SELECT max(generation) FROM {self.database}.generations")
        return int(rows[0][0]) if rows else 0

    async def create_generation(self, generation: int, *, rollups: bool = True) -> None:
        for sql in table_statements(self.database, generation, self.cluster, rollups=rollups):
            await self._command(sql)
        await self._adopt_retired_positions(generation)

    async def _adopt_retired_positions(self, generation: int) -> None:
        """Carry a generation created before log epochs over to ``log_positions``.

        Its positions become epoch 0 with an unknown fingerprint (0): the projector checks
        only the high watermark for them until it writes again. Runs at prepare time, before
        any insert; running it twice (two instances starting) is harmless, positions are
        max-aggregated. The old views are dropped so the old table stops growing.
        """
        views, table = retired_names(self.database, generation)
        rows = await self._rows(
            "SELECT count() FROM system.tables "
            "WHERE database = {db:String} AND name = {name:String}",
            {"db": self.database, "name": table.split(".", 1)[1]},
        )
        if not rows or not int(rows[0][0]):
            return
        await self._command(
            f"INSERT INTO {self.database}.log_positions_g{int(generation)} "
            "(kafka_topic, kafka_partition, log_epoch, last_written) "
            "SELECT kafka_topic, kafka_partition, 0, (max(next_offset), toUInt64(0)) "
            f"FROM {table} GROUP BY kafka_topic, kafka_partition"
        )
        for view in views:
            await self._command(drop_statement(view, self.cluster))
        logger.warning(
            "generation %d predates log epochs: its positions were carried over to "
            "log_positions_g%d without fingerprints",
            generation, generation,
        )  # fmt: skip

    async def drop_generation(self, generation: int) -> None:
        # Views first: a table cannot go while a materialized view still reads from it.
        views, table = retired_names(self.database, generation)
        for name in [*views, *reversed(table_names(self.database, generation)), table]:
            await self._command(drop_statement(name, self.cluster))

    async def activate(self, generation: int) -> None:
        """Point every public view at ``generation`` and make it the live one."""
        await self._command(
            f"INSERT INTO {self.database}.generations (generation) VALUES ({int(generation)})"
        )
        for sql in view_statements(self.database, generation, self.cluster):
            await self._command(sql)

    # -- look-ups ---------------------------------------------------------------------------

    async def positions(
        self, generation: int, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, Stored]:
        """Each partition's position in its current log epoch (absent: nothing written)."""
        return (await self.positions_and_fences(generation, partitions))[0]

    async def positions_and_fences(
        self, generation: int, partitions: Iterable[TopicPartition]
    ) -> tuple[dict[TopicPartition, Stored], dict[TopicPartition, int]]:
        """Each partition's position (as :meth:`positions`) and its latest fence (absent:
        none registered), in one round trip: every batch asks."""
        wanted = {(tp.topic, tp.partition) for tp in partitions}
        if not wanted:
            return {}, {}
        g = int(generation)
        rows = await self._rows(
            "SELECT kafka_topic, kafka_partition, log_epoch, max(last_written), 0 "
            f"FROM {self.database}.log_positions_g{g} "
            "WHERE kafka_topic IN {topics:Array(String)} "
            "GROUP BY kafka_topic, kafka_partition, log_epoch "
            "UNION ALL "
            "SELECT kafka_topic, kafka_partition, log_epoch, (start_offset, toUInt64(0)), 1 "
            f"FROM {self.database}.log_epochs "
            "WHERE generation = {generation:UInt32} AND kafka_topic IN {topics:Array(String)} "
            "UNION ALL "
            "SELECT kafka_topic, kafka_partition, 0, (argMax(fence, (seq, fence)), toUInt64(0)), 2 "
            f"FROM {self.database}.fences_g{g} "
            "WHERE kafka_topic IN {topics:Array(String)} GROUP BY kafka_topic, kafka_partition",
            {"topics": sorted({topic for topic, _ in wanted}), "generation": g},
        )
        found: list[PositionRow] = []
        fences: dict[TopicPartition, int] = {}
        for t, p, e, last, kind in rows:
            if (t, p) not in wanted:
                continue
            if kind == 2:
                fences[TopicPartition(str(t), int(p))] = int(last[0])
            else:
                found.append((str(t), int(p), int(e), (int(last[0]), int(last[1])), int(kind)))
        return current_positions(found), fences

    # -- fences (docs/exactly-once.md) ---------------------------------------------------------

    async def fence_sequences(
        self, generation: int, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The sequence number of each partition's latest registration (absent: none)."""
        wanted = {(tp.topic, tp.partition) for tp in partitions}
        if not wanted:
            return {}
        rows = await self._rows(
            f"SELECT kafka_topic, kafka_partition, max(seq) FROM {self.database}.fences_g"
            f"{int(generation)} WHERE kafka_topic IN {{topics:Array(String)}} "
            "GROUP BY kafka_topic, kafka_partition",
            {"topics": sorted({topic for topic, _ in wanted})},
        )
        return {TopicPartition(str(t), int(p)): int(seq) for t, p, seq in rows if (t, p) in wanted}

    async def add_fences(
        self, generation: int, fences: Sequence[tuple[TopicPartition, int, int]], owner: str
    ) -> None:
        """Register (partition, sequence, fence) rows. Sent again after an unclear failure,
        the same rows are stored once (the table deduplicates identical blocks)."""
        await _guard(
            "register fences",
            lambda: self._client.insert(
                f"fences_g{int(generation)}",
                [(tp.topic, tp.partition, seq, fence, owner) for tp, seq, fence in fences],
                column_names=["kafka_topic", "kafka_partition", "seq", "fence", "owner"],
                database=self.database,
                settings={"insert_deduplicate": 1},
            ),
            self._timeouts.read_s,
        )

    async def writes_in_flight(self, generation: int) -> list[str]:
        """The query ids of inserts into ``generation``'s writes tables running now."""
        rows = await self._rows(
            "SELECT query_id FROM system.processes WHERE query_kind = 'Insert' "
            "AND match(query, {pattern:String})",
            {"pattern": writes_pattern(self.database, generation)},
        )
        return [str(query_id) for (query_id,) in rows]

    async def wait_until_finished(self, query_ids: Sequence[str]) -> float:
        """Wait until none of ``query_ids`` runs any more; return how long that took."""
        started = time.monotonic()
        logged = started
        remaining = list(query_ids)
        while remaining:
            rows = await self._rows(
                "SELECT query_id FROM system.processes WHERE query_id IN {ids:Array(String)}",
                {"ids": remaining},
            )
            remaining = [str(query_id) for (query_id,) in rows]
            if not remaining:
                break
            now = time.monotonic()
            if now - logged >= _IN_FLIGHT_LOG_S:
                logged = now
                logger.warning(
                    "still waiting for %d writes that began before the fence (%.0f s so far)",
                    len(remaining), now - started,
                )  # fmt: skip
            await asyncio.sleep(_IN_FLIGHT_POLL_S)
        return time.monotonic() - started

    async def accept_epoch(
        self, generation: int, tp: TopicPartition, epoch: int, start_offset: int, reason: str
    ) -> None:
        """Record that ``tp`` is projected from ``start_offset`` of its log, as ``epoch``."""
        await _guard(
            "record a log epoch",
            lambda: self._client.insert(
                "log_epochs",
                [(generation, tp.topic, tp.partition, epoch, start_offset, reason)],
                column_names=[
                    "generation", "kafka_topic", "kafka_partition", "log_epoch",
                    "start_offset", "reason",
                ],
                database=self.database,
            ),
            self._timeouts.read_s,
        )  # fmt: skip

    async def counted(self, generation: int, keys: Iterable[DedupeKey]) -> dict[DedupeKey, str]:
        """Which of ``keys`` are already counted, and by which event."""
        pairs = sorted({(u, t) for u, t, _ in keys if t})
        events = sorted({e for _, t, e in keys if not t})
        if not pairs and not events:
            return {}
        wanted = _external(
            ("wanted_pairs", pairs, "universe String, transaction_id String"),
            ("wanted_events", [(e,) for e in events], "event_id String"),
        )
        rows = await self._rows(
            f"SELECT universe, transaction_id, event_id FROM {self.database}.sales_g{generation} "
            "WHERE (universe, transaction_id) IN wanted_pairs "
            "OR (transaction_id = '' AND event_id IN wanted_events)",
            external_data=wanted,
        )
        found: dict[DedupeKey, str] = {}
        for universe, transaction_id, event_id in rows:
            key = (universe, transaction_id, "" if transaction_id else event_id)
            # Exactly one row per key by construction; min() keeps this deterministic anyway.
            found[key] = min(found.get(key, event_id), event_id)
        return found

    async def refunded(
        self, generation: int, keys: Iterable[SaleKey]
    ) -> tuple[dict[SaleKey, SaleFacts], dict[SaleKey, Refunded]]:
        """The counted sale of each transaction (absent: none) and its counted refunds."""
        pairs = sorted(set(keys))
        if not pairs:
            return {}, {}
        g = int(generation)
        wanted = ("wanted_pairs", pairs, "universe String, transaction_id String")
        sale_rows, refund_rows = await asyncio.gather(
            self._rows(
                "SELECT universe, transaction_id, toString(amount), currency, customer_id, "
                "campaign_id, link_id, product, toUnixTimestamp64Milli(sold_at) "
                f"FROM {self.database}.sales_g{g} WHERE (universe, transaction_id) IN wanted_pairs",
                external_data=_external(wanted),
            ),
            self._rows(
                "SELECT universe, transaction_id, refund_id, event_id, toString(amount) "
                f"FROM {self.database}.refunds_g{g} "
                "WHERE (universe, transaction_id) IN wanted_pairs ORDER BY event_id",
                external_data=_external(wanted),
            ),
        )
        sales = {
            (u, t): SaleFacts(Decimal(amount), currency, customer, campaign, link, product, int(at))
            for u, t, amount, currency, customer, campaign, link, product, at in sale_rows
        }
        refunded: dict[SaleKey, Refunded] = {}
        for u, t, refund_id, event_id, amount in refund_rows:
            before = refunded.get((u, t), Refunded())
            refunded[(u, t)] = before.plus(refund_id, event_id, Decimal(amount))
        return sales, refunded

    async def clicks_of(
        self, generation: int, customers: Iterable[tuple[str, str]], since_ms: int, until_ms: int
    ) -> list[ClickContext]:
        pairs = sorted(set(customers))
        if not pairs:
            return []
        rows = await self._rows(
            "SELECT universe, customer_id, campaign_id, link_id, product, "
            "toUnixTimestamp64Milli(clicked_at), event_id "
            f"FROM {self.database}.clicks_g{generation} "
            "WHERE (universe, customer_id) IN wanted_customers "
            f"AND clicked_at >= fromUnixTimestamp64Milli({int(since_ms)}, 'UTC') "
            f"AND clicked_at <= fromUnixTimestamp64Milli({int(until_ms)}, 'UTC')",
            external_data=_external(
                ("wanted_customers", pairs, "universe String, customer_id String")
            ),
        )
        return [
            ClickContext(u, c, k, link, product, int(at), event_id)
            for u, c, k, link, product, at, event_id in rows
        ]

    # -- writes -----------------------------------------------------------------------------

    async def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], token: str
    ) -> None:
        await _guard(
            f"insert into {table}",
            lambda: self._client.insert(
                table,
                rows,
                column_names=list(columns),
                database=self.database,
                settings={
                    "insert_deduplicate": 1,
                    "insert_deduplication_token": token,
                    "deduplicate_blocks_in_dependent_materialized_views": 1,
                },
            ),
            self._timeouts.read_s,
        )
