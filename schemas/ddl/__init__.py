"""The ClickHouse schema as SQL files: ``meta.sql`` once per database, ``tables.sql`` once per
generation, ``views.sql`` (the public surface) pointed at the live generation.

Statements are templated with ``{database}`` and ``{generation}`` only; every other brace
(the parameterized view's ``{universe:String}``, the ``{shard}``/``{replica}`` macros of
cluster mode) is left as it is. The four rollups are described once each (:data:`ROLLUPS`):
the statements ``{rollup_tables}`` and ``{rollup_views}`` of the files stand for the
statements rendered from those descriptions. Every rollup is per currency: amounts of
different currencies are never added up.

Cluster mode (a cluster name given) rewrites the same statements for one shard of N
replicas: ``ON CLUSTER``, Replicated engines with a Keeper path per table and generation, and
``replicated_deduplication_window`` where a single server sets
``non_replicated_deduplication_window``. Without a cluster name the statements are exactly
the files' text (and the rollups' rendering). See docs/cluster.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Cluster names come from the servers' remote_servers config, where hyphens are common; the
# name is always back-quoted, so these characters are all it may hold.
_CLUSTER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")

# Where each statement names its object, so ON CLUSTER can follow the name (for a
# materialized view it must come before TO: ClickHouse's parser refuses it after).
_HEAD = re.compile(
    r"^(?:CREATE (?:OR REPLACE )?(?:TABLE|VIEW|MATERIALIZED VIEW|DATABASE) (?:IF NOT EXISTS )?"
    r"|ALTER TABLE )(\S+)"
)
_ENGINE = re.compile(r"\bENGINE = (\w+)(?:\(([^)]*)\))?")
_MERGE_TREE = re.compile(
    r"^(?:Summing|Aggregating|Replacing|Collapsing|VersionedCollapsing)?MergeTree$"
)
_NON_REPLICATED_WINDOW = re.compile(r"\bnon_replicated_deduplication_window\b")


@dataclass(frozen=True)
class Column:
    """A key column of a rollup, and how its materialized view computes it from a call
    (``expression``; "" when it is the call's column of the same name)."""

    name: str
    type: str
    expression: str = ""

    @property
    def selected(self) -> str:
        return f"{self.expression} AS {self.name}" if self.expression else self.name


@dataclass(frozen=True)
class Rollup:
    """Counted calls summed per universe and ``keys``: a SummingMergeTree table fed by a
    materialized view of ``sales_calls``, and the public view that sums its parts again at
    read time (so it is exact before any merge)."""

    table: str
    view: str
    keys: tuple[Column, ...]
    # Which counted calls it sums, beyond status = 'counted' ("" for all of them).
    where: str = ""


_UNIVERSE: Final = Column("universe", "LowCardinality(String)")
_CAMPAIGN: Final = Column("campaign_id", "String")
# The call's currency as it came ('' when it had none). Rendered into every rollup, last in
# its key, so no rollup can add EUR to USD. A universe's default currency (a later registry)
# belongs in the public views' expression for it (rollup_view_statement), not here: the
# views group again anyway, so a changed default would need no rebuild.
CURRENCY: Final = Column("currency", "LowCardinality(String)")

ROLLUPS: Final = (
    Rollup("campaign_rollup", "campaign_turnover", (_CAMPAIGN,)),
    Rollup(
        "customer_rollup", "customer_turnover", (Column("customer_id", "String"),),
        where="customer_id != ''",
    ),
    Rollup("link_rollup", "link_turnover", (_CAMPAIGN, Column("link_id", "String"))),
    Rollup(
        "campaign_daily_rollup", "campaign_turnover_daily",
        (_CAMPAIGN, Column("day", "Date", "toDate(received_at, 'UTC')")),
    ),
)  # fmt: skip

# Where a line of a rendered statement is wrapped (as the hand-written files were).
_WIDTH: Final = 100


def _select(columns: list[str]) -> str:
    """``SELECT`` of ``columns``, as many to a line as fit."""
    lines = [f"SELECT {columns[0]}"]
    for column in columns[1:]:
        if len(f"{lines[-1]}, {column},") <= _WIDTH:
            lines[-1] = f"{lines[-1]}, {column}"
        else:
            lines[-1] += ","
            lines.append(f"       {column}")
    return "\n".join(lines)


def _wrap(columns: list[str]) -> str:
    """A table's ``columns``, as many to a line as fit (indented as the files' tables)."""
    lines = [columns[0]]
    for column in columns[1:]:
        if len(f"    {lines[-1]}, {column},") <= _WIDTH:
            lines[-1] = f"{lines[-1]}, {column}"
        else:
            lines.append(column)
    return ",\n    ".join(lines)


def _key(rollup: Rollup) -> tuple[Column, ...]:
    return (_UNIVERSE, *rollup.keys, CURRENCY)


# What a rollup sums, after its key: sales (purchases, turnover) and, since refunds, counted
# refunds (refunds, refunded_purchases: full refunds only, refunded_turnover). The public
# views subtract the second from the first.
_SALE_SUMS: Final = (
    ("purchases", "UInt64", "count()"),
    ("turnover", "Decimal(38, 4)", "sum(toDecimal128(amount, 4))"),
)
REFUND_SUMS: Final = (
    ("refunds", "UInt64", "count()"),
    ("refunded_purchases", "UInt64", "sum(toUInt64(full_refund))"),
    ("refunded_turnover", "Decimal(38, 4)", "sum(toDecimal128(amount, 4))"),
)


def rollup_table_statements(rollup: Rollup) -> list[str]:
    """The rollup's table (columns added in place to a table created before refunds) and the
    materialized views feeding it from sales and from refunds, templated like the files."""
    keys = [c.name for c in _key(rollup)]
    table = f"{{database}}.{rollup.table}_g{{generation}}"
    columns = _wrap([f"{c.name} {c.type}" for c in _key(rollup)])
    where = "status = 'counted'" + (f" AND {rollup.where}" if rollup.where else "")
    selected = [c.selected for c in _key(rollup)]
    sums = _wrap([f"{name} {kind}" for name, kind, _ in _SALE_SUMS + REFUND_SUMS])
    # Old rows (and each view's rows for the other's columns) read 0.
    added = ",\n    ".join(
        f"ADD COLUMN IF NOT EXISTS {name} {kind} DEFAULT 0" for name, kind, _ in REFUND_SUMS
    )

    def view(name: str, source: str, of: tuple[tuple[str, str, str], ...]) -> str:
        return (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {{database}}.{rollup.table}_{name}"
            f"_g{{generation}}\n"
            f"TO {table} AS\n"
            f"{_select(selected + [f'{expr} AS {col}' for col, _, expr in of])}\n"
            f"FROM {{database}}.{source}_g{{generation}} WHERE {where}\n"
            f"GROUP BY {', '.join(keys)}"
        )

    return [
        f"CREATE TABLE IF NOT EXISTS {table}\n"
        f"(\n    {columns},\n    {sums}\n)\n"
        "ENGINE = SummingMergeTree\n"
        f"ORDER BY ({', '.join(keys)})\n"
        "SETTINGS non_replicated_deduplication_window = 10000",
        f"ALTER TABLE {table}\n    {added}",
        view("mv", "sales_calls", _SALE_SUMS),
        view("refunds_mv", "refunds_calls", REFUND_SUMS),
    ]


def rollup_view_statement(rollup: Rollup) -> str:
    """The rollup's public view, templated like the files: ``purchases`` and ``turnover`` are
    net of refunds (a day's can be negative: a refund is booked on its own day), beside the
    gross figures and the refunds. The sums are named apart in a subquery: an alias that is
    also a column's name would be read inside the other sums (nested aggregation)."""
    keys = ", ".join(c.name for c in _key(rollup))
    sums = (
        "sum(purchases) AS p, sum(turnover) AS t, sum(refunds) AS n,\n"
        "             sum(refunded_purchases) AS rp, sum(refunded_turnover) AS rt"
    )
    inner = (
        f"(SELECT {keys},\n             {sums}\n"  # noqa: S608 - names from ROLLUPS
        f"      FROM {{database}}.{rollup.table}_g{{generation}}\n"
        f"      GROUP BY {keys})"
    )
    return (
        f"CREATE OR REPLACE VIEW {{database}}.{rollup.view} AS\n"
        f"SELECT {keys},\n"
        "       p - rp AS purchases, t - rt AS turnover, p AS gross_purchases,\n"
        "       t AS gross_turnover, n AS refunds, rt AS refunded_turnover\n"
        f"FROM {inner}"
    )


_RENDERED: Final = {
    "{rollup_tables}": [sql for r in ROLLUPS for sql in rollup_table_statements(r)],
    "{rollup_views}": [rollup_view_statement(r) for r in ROLLUPS],
}


def valid_database_name(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))


def valid_cluster_name(name: str) -> bool:
    # fullmatch: "$" alone would let a trailing newline through into the DDL.
    return bool(_CLUSTER.fullmatch(name))


def _on_cluster(sql: str, cluster: str) -> str:
    """One single-server statement as the same statement for every replica of ``cluster``."""
    head = _HEAD.match(sql)
    if head is None:
        # A statement kind this does not know (an INSERT, a DROP) would run on one server
        # only: refuse it rather than let a replica miss it.
        raise ValueError(f"no ON CLUSTER form for: {sql.splitlines()[0]}")
    name = head.group(1)
    sql = f"{sql[: head.end()]} ON CLUSTER `{cluster}`{sql[head.end() :]}"

    def replicated(engine: re.Match[str]) -> str:
        if engine.group(1) == "Null":
            # The intake tables hold nothing: each replica has its own, and what an insert
            # into one fans out to lands in that replica's replicated ledgers.
            return engine.group(0)
        if not _MERGE_TREE.match(engine.group(1)):
            # Any other engine keeps its data on one server: not a replica at all.
            raise ValueError(f"{name}: engine {engine.group(1)} cannot be replicated")
        # One Keeper path per table: the table's name carries its generation, so a rebuild's
        # tables never share a path with the live ones, and a dropped generation (DROP ...
        # SYNC removes its path) can be created again at the same place.
        database, _, table = name.partition(".")
        args = [f"'/clickhouse/tables/{{shard}}/{database}/{table}'", "'{replica}'"]
        if engine.group(2):
            args.append(engine.group(2))
        return f"ENGINE = Replicated{engine.group(1)}({', '.join(args)})"

    sql = _ENGINE.sub(replicated, sql)
    # The insert-deduplication window of a replicated table lives in Keeper and is shared by
    # its replicas, so a retry sent to another replica is still recognised.
    return _NON_REPLICATED_WINDOW.sub("replicated_deduplication_window", sql)


def _load(
    name: str, database: str, generation: int, cluster: str = "", *, rollups: bool = True
) -> list[str]:
    if not valid_database_name(database):
        raise ValueError(f"invalid ClickHouse database name {database!r}")
    if cluster and not valid_cluster_name(cluster):
        raise ValueError(f"invalid ClickHouse cluster name {cluster!r}")
    text = resources.files("schemas.ddl").joinpath(name).read_text(encoding="utf-8")
    # Comments go first: they may contain semicolons.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    result = []
    for statement in code.split(";"):
        sql = statement.strip()
        rendered = _RENDERED.get(sql)
        if rendered is not None and not rollups:
            continue
        for one in rendered if rendered is not None else [sql] if sql else []:
            result.append(
                one.replace("{database}", database).replace("{generation}", str(generation))
            )
    return [_on_cluster(sql, cluster) for sql in result] if cluster else result


def meta_statements(database: str, cluster: str = "") -> list[str]:
    create = f"CREATE DATABASE IF NOT EXISTS {database}"
    return [
        _on_cluster(create, cluster) if cluster else create,
        *_load("meta.sql", database, 0, cluster),
    ]


def table_statements(
    database: str, generation: int, cluster: str = "", *, rollups: bool = True
) -> list[str]:
    """``rollups=False`` leaves the rollups' tables and materialized views out: for a
    generation whose rollups predate currencies, where ClickHouse refuses today's
    materialized views even with IF NOT EXISTS (they name a column the tables lack)."""
    return _load("tables.sql", database, generation, cluster, rollups=rollups)


def view_statements(database: str, generation: int, cluster: str = "") -> list[str]:
    return _load("views.sql", database, generation, cluster)


def drop_statement(name: str, cluster: str = "") -> str:
    """Drop one table or view now, on every replica in cluster mode.

    SYNC because a replicated table's Keeper path is only removed with the table: a rebuild
    that drops a half-built generation creates it again at the same path at once.
    """
    if cluster and not valid_cluster_name(cluster):
        raise ValueError(f"invalid ClickHouse cluster name {cluster!r}")
    on = f" ON CLUSTER `{cluster}`" if cluster else ""
    return f"DROP TABLE IF EXISTS {name}{on} SYNC"


def table_names(database: str, generation: int) -> list[str]:
    """Every table and materialized view of one generation, for dropping an old one."""
    pattern = re.compile(rf"CREATE (?:MATERIALIZED VIEW|TABLE) IF NOT EXISTS ({database}\.\S+)")
    return [
        m.group(1) for sql in table_statements(database, generation) if (m := pattern.search(sql))
    ]


def retired_names(database: str, generation: int) -> tuple[list[str], str]:
    """What generations created before log epochs had and no longer get: the materialized
    views feeding ``positions_g`` (dropped when the generation is prepared) and that table
    (kept, frozen, until the generation is dropped)."""
    views = [
        f"{database}.positions_from_{source}_g{generation}"
        for source in ("sales", "clicks", "dead_letters")
    ]
    return views, f"{database}.positions_g{generation}"
