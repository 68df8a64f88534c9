"""Where ClickHouse's time goes during a projector run: its own logs, read after the run.

- ``system.query_log``: per kind of statement (an insert per ledger table, each look-up),
  its count and ProfileEvents (real, user and system CPU time, rows selected and inserted);
- ``system.query_views_log``: per materialized view, the time and rows the inserts pushed
  through it;
- ``system.part_log``: parts created and merged per table, per second of the run;
- ``system.processors_profile_log``: the busiest processors of the inserts' pipelines.

The bench's ClickHouse keeps these logs (``compose.clickhouse_server --system-logs``); a
server without them gives an empty profile, said so in the report rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

# A statement's kind: INSERT INTO <table> or the table a look-up reads first, generation
# suffix removed, so the rows read "insert sales_writes", "select sales" (the dedupe look-up),
# "select clicks" (stored clicks), "select log_positions" (positions).
_KIND = (
    "concat(lower(toString(query_kind)), ' ', "
    "replaceRegexpOne(replaceRegexpOne(if(query_kind = 'Insert', "
    r"extract(replaceAll(query, '`', ''), '(?i)INSERT INTO\s+([\w.]+)'), "
    r"extract(replaceAll(query, '`', ''), '(?i)FROM\s+([\w.]+)')), '^[^.]*\.', ''), "
    "'_g[0-9]+$', ''))"
)


def _rows(client: Client, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def queries(client: Client, database: str, since: int) -> list[dict[str, Any]]:
    """Per kind of statement of ``database`` since the Unix time ``since``."""
    return _rows(
        client,
        f"SELECT {_KIND} AS kind, count() AS n, "
        "round(sum(ProfileEvents['RealTimeMicroseconds']) / 1e6, 2) AS real_s, "
        "round(sum(ProfileEvents['UserTimeMicroseconds']) / 1e6, 2) AS user_s, "
        "round(sum(ProfileEvents['SystemTimeMicroseconds']) / 1e6, 2) AS system_s, "
        "round(sum(query_duration_ms) / 1e3, 2) AS wall_s, "
        "sum(ProfileEvents['SelectedRows']) AS selected_rows, "
        "sum(ProfileEvents['InsertedRows']) AS inserted_rows, "
        "sum(ProfileEvents['MergeTreeDataWriterBlocks']) AS parts_written "
        "FROM system.query_log WHERE type = 'QueryFinish' "
        "AND event_time >= toDateTime({since:UInt32}) AND has(databases, {db:String}) "
        "AND query_kind IN ('Insert', 'Select') "
        "GROUP BY kind ORDER BY user_s + system_s DESC",
        {"db": database, "since": since},
    )


def views(client: Client, database: str, since: int) -> list[dict[str, Any]]:
    """Per materialized view: what the inserts spent pushing blocks through it."""
    return _rows(
        client,
        "SELECT replaceRegexpOne(replaceRegexpOne(view_name, '^[^.]*\\.', ''), '_g[0-9]+$', '') "
        "AS view, count() AS n, round(sum(view_duration_ms) / 1e3, 2) AS wall_s, "
        "round(sum(ProfileEvents['UserTimeMicroseconds']) / 1e6, 2) AS user_s, "
        "round(sum(ProfileEvents['SystemTimeMicroseconds']) / 1e6, 2) AS system_s, "
        "sum(read_rows) AS read_rows, sum(written_rows) AS written_rows "
        "FROM system.query_views_log WHERE event_time >= toDateTime({since:UInt32}) "
        "AND startsWith(view_name, {prefix:String}) "
        "GROUP BY view ORDER BY wall_s DESC",
        {"prefix": f"{database}.", "since": since},
    )


def parts(client: Client, database: str, since: int, seconds: float) -> list[dict[str, Any]]:
    """Per table: parts created and merged (and per second of the run), rows, merge time."""
    return _rows(
        client,
        "SELECT replaceRegexpOne(table, '_g[0-9]+$', '') AS table, "
        "countIf(event_type = 'NewPart') AS new_parts, "
        "round(countIf(event_type = 'NewPart') / {seconds:Float64}, 1) AS new_per_s, "
        "countIf(event_type = 'MergeParts') AS merges, "
        "round(countIf(event_type = 'MergeParts') / {seconds:Float64}, 1) AS merges_per_s, "
        "sumIf(rows, event_type = 'NewPart') AS rows_written, "
        "sumIf(rows, event_type = 'MergeParts') AS rows_merged, "
        "round(sumIf(duration_ms, event_type = 'MergeParts') / 1e3, 2) AS merge_s "
        "FROM system.part_log WHERE event_time >= toDateTime({since:UInt32}) "
        "AND database = {db:String} GROUP BY table ORDER BY merge_s + new_parts DESC",
        {"db": database, "since": since, "seconds": max(seconds, 1e-3)},
    )


def processors(client: Client, database: str, since: int, top: int = 12) -> list[dict[str, Any]]:
    """The processors the inserts' pipelines spent most time in (ledger and views together)."""
    return _rows(
        client,
        "SELECT name AS processor, count() AS n, round(sum(elapsed_us) / 1e6, 2) AS busy_s, "
        "sum(input_rows) AS input_rows "
        "FROM system.processors_profile_log WHERE event_time >= toDateTime({since:UInt32}) "
        "AND query_id IN (SELECT query_id FROM system.query_log "
        "WHERE event_time >= toDateTime({since:UInt32}) AND has(databases, {db:String}) "
        "AND query_kind = 'Insert' AND type = 'QueryFinish') "
        "GROUP BY name ORDER BY busy_s DESC LIMIT {top:UInt32}",
        {"db": database, "since": since, "top": top},
    )


def profile(clickhouse: str, database: str, since: int, seconds: float) -> dict[str, Any]:
    """Every table of the breakdown for ``database``'s statements since ``since``."""
    client = clickhouse_connect.get_client(dsn=clickhouse)
    try:
        client.command("SYSTEM FLUSH LOGS")
        found: dict[str, Any] = {}
        readers: dict[str, Callable[[], list[dict[str, Any]]]] = {
            "queries": lambda: queries(client, database, since),
            "views": lambda: views(client, database, since),
            "parts": lambda: parts(client, database, since, seconds),
            "processors": lambda: processors(client, database, since),
        }
        for name, read in readers.items():
            try:
                found[name] = read()
            except clickhouse_connect.driver.exceptions.DatabaseError as e:
                # A server without that log (not configured): say so in the report.
                found[name] = [{"error": str(e).splitlines()[0][:200]}]
        return found
    finally:
        client.close()
