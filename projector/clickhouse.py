"""ClickHouse access for the projector: connect, create the schema, idempotent inserts."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import clickhouse_connect
from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from projector.errors import ProjectorError
from projector.rows import Row
from schemas.ddl import statements

logger = logging.getLogger(__name__)


async def connect(url: str, database: str) -> AsyncClient:
    """A client for ``url``; the database is named per query, it may not exist yet."""
    try:
        client = await clickhouse_connect.get_async_client(dsn=url, database="default")
    except OperationalError as e:
        raise ProjectorError(f"ClickHouse unreachable: {e}", retriable=True) from e
    except DatabaseError as e:
        raise ProjectorError(f"ClickHouse refused the connection: {e}", retriable=False) from e
    return client


async def create_schema(client: AsyncClient, database: str) -> None:
    """Apply every DDL statement of ``schemas/ddl`` (all ``IF NOT EXISTS``: idempotent)."""
    for sql in statements(database):
        try:
            await client.command(sql)
        except OperationalError as e:
            raise ProjectorError(f"ClickHouse unreachable: {e}", retriable=True) from e
        except DatabaseError as e:
            raise ProjectorError(f"schema statement failed: {e}\n{sql}", retriable=False) from e


def dedup_token(table: str, extent: str) -> str:
    """The insert deduplication token of one table's rows for one batch of offsets.

    A batch re-read from the same offsets after a failure makes the same token, and
    ClickHouse then ignores the retried insert instead of storing the rows twice.
    """
    return hashlib.sha256(f"{table}|{extent}".encode()).hexdigest()


async def insert(
    client: AsyncClient,
    *,
    database: str,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Row],
    token: str,
) -> None:
    try:
        await client.insert(
            table,
            rows,
            column_names=list(columns),
            database=database,
            settings={"insert_deduplication_token": token, "insert_deduplicate": 1},
        )
    except OperationalError as e:
        raise ProjectorError(f"insert into {table} failed: {e}", retriable=True) from e
    except DatabaseError as e:
        # Server-side errors that are about load, not about our data, are worth a retry.
        retriable = any(code in str(e) for code in ("TOO_MANY", "TIMEOUT", "MEMORY_LIMIT"))
        raise ProjectorError(f"insert into {table} failed: {e}", retriable=retriable) from e
