"""The ClickHouse schema as SQL files: ``meta.sql`` once per database, ``tables.sql`` once per
generation, ``views.sql`` (the public surface) pointed at the live generation.

Statements are templated with ``{database}`` and ``{generation}`` only; every other brace
(the parameterized view's ``{universe:String}``, the ``{shard}``/``{replica}`` macros of
cluster mode) is left as it is.

Cluster mode (a cluster name given) rewrites the same statements for one shard of N
replicas: ``ON CLUSTER``, Replicated engines with a Keeper path per table and generation, and
``replicated_deduplication_window`` where a single server sets
``non_replicated_deduplication_window``. Without a cluster name the statements are exactly
the files' text. See docs/cluster.md.
"""

from __future__ import annotations

import re
from importlib import resources

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


def _load(name: str, database: str, generation: int, cluster: str = "") -> list[str]:
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
        if sql:
            result.append(
                sql.replace("{database}", database).replace("{generation}", str(generation))
            )
    return [_on_cluster(sql, cluster) for sql in result] if cluster else result


def meta_statements(database: str, cluster: str = "") -> list[str]:
    create = f"CREATE DATABASE IF NOT EXISTS {database}"
    return [
        _on_cluster(create, cluster) if cluster else create,
        *_load("meta.sql", database, 0, cluster),
    ]


def table_statements(database: str, generation: int, cluster: str = "") -> list[str]:
    return _load("tables.sql", database, generation, cluster)


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
