"""Cluster mode's DDL: what ClickHouse's own parser reads, and the deduplication windows.

The local ClickHouse cannot run Replicated tables (no Keeper), so cluster statements are
parsed by it (``formatQuery``), never executed; docs/cluster.md says what that leaves out.
Single-server statements are also created for real, and must stay exactly what they were
before cluster mode (tests/schemas/test_ddl.py holds them to a captured copy).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, cast

import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient

from projector.settings import ProjectorSettings
from projector.store import Store
from schemas.ddl import (
    drop_statement,
    meta_statements,
    retired_names,
    table_names,
    table_statements,
    view_statements,
)
from schemas.environ import ConfigError

CLUSTER = "tracker-prod_1"
DATABASE = "tracker"
GENERATIONS = (1, 2)
SECRET = {"TRACKER_SECRET": "s" * 32}

# meta.sql's tables take plain inserts without a deduplication token (one row recording a
# generation or an accepted log epoch; a repeated row changes nothing) and predate the
# cluster mode: giving them a window would change the single-server DDL. Any other table
# added without its window fails the test below.
NO_WINDOW = {"generations", "log_epochs"}
# The intake and writes tables (ENGINE = Null) hold nothing, so nothing in them to deduplicate
# or replicate: the ledgers their views feed carry the window.
INTAKE = re.compile(r"^(sales|clicks)_(intake|writes)_g\d+$")

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)")
_ENGINE = re.compile(r"^ENGINE = (\w+)(?:\((.*)\))?$", re.MULTILINE)
_SETTINGS = re.compile(r"^SETTINGS (.*)$", re.MULTILINE)


def all_statements(database: str, cluster: str) -> list[str]:
    statements = meta_statements(database, cluster)
    for generation in GENERATIONS:
        statements += table_statements(database, generation, cluster)
        statements += view_statements(database, generation, cluster)
        views, table = retired_names(database, generation)
        for name in [*views, *reversed(table_names(database, generation)), table]:
            statements.append(drop_statement(name, cluster))
    return statements


def created_tables(database: str, generation: int) -> int:
    """The generation's tables that store rows (not the Null intake tables)."""
    return sum(
        sql.startswith("CREATE TABLE") and "ENGINE = Null" not in sql
        for sql in table_statements(database, generation)
    )


async def parsed(ch: AsyncClient, sql: str) -> str:
    """``sql`` as ClickHouse's parser reads it; a syntax error fails the test."""
    result = await ch.query("SELECT formatQuery({sql:String})", parameters={"sql": sql})
    return str(result.result_rows[0][0])


def settings_of(formatted: str) -> dict[str, str]:
    found = _SETTINGS.search(formatted)
    if found is None:
        return {}
    pairs = (item.split(" = ", 1) for item in found.group(1).split(", "))
    return {key: value for key, value in pairs}


# -- single server: unchanged -------------------------------------------------------------


def test_without_a_cluster_the_statements_are_the_single_server_ones() -> None:
    """The single-server statements themselves: tests/schemas/test_ddl.py."""
    settings = ProjectorSettings.from_env(SECRET)
    assert settings.clickhouse_cluster == ""
    cluster = settings.clickhouse_cluster
    assert meta_statements(DATABASE, cluster) == meta_statements(DATABASE)
    assert meta_statements(DATABASE)[0] == f"CREATE DATABASE IF NOT EXISTS {DATABASE}"
    for generation in GENERATIONS:
        tables = table_statements(DATABASE, generation)
        assert table_statements(DATABASE, generation, cluster) == tables
        assert view_statements(DATABASE, generation, cluster) == view_statements(
            DATABASE, generation
        )
    assert (
        drop_statement(f"{DATABASE}.sales_g1") == f"DROP TABLE IF EXISTS {DATABASE}.sales_g1 SYNC"
    )
    assert not any("CLUSTER" in sql or "Replicated" in sql for sql in all_statements(DATABASE, ""))


async def test_single_server_tables_are_created_with_their_window(
    ch: AsyncClient, isolation: str
) -> None:
    """The window the statements carry is the one the server keeps (read back from it)."""
    statements = meta_statements(isolation) + table_statements(isolation, 1)
    for sql in statements:
        await ch.command(sql)
    result = await ch.query(
        "SELECT name, engine, engine_full FROM system.tables "
        "WHERE database = {db:String} AND engine LIKE '%MergeTree'",
        parameters={"db": isolation},
    )
    tables = {str(name): (str(engine), str(full)) for name, engine, full in result.result_rows}
    assert len(tables) == sum(
        sql.startswith("CREATE TABLE") and "ENGINE = Null" not in sql for sql in statements
    )
    for name, (engine, full) in tables.items():
        assert not engine.startswith("Replicated"), name
        if name not in NO_WINDOW:
            assert "non_replicated_deduplication_window = " in full, name


# -- cluster mode -------------------------------------------------------------------------


async def test_every_cluster_statement_parses_and_names_the_cluster(ch: AsyncClient) -> None:
    statements = all_statements(DATABASE, CLUSTER)
    assert len(statements) > 60
    for sql in statements:
        formatted = await parsed(ch, sql)
        head = formatted.split("\n", 1)[0]
        # Every statement is DDL and reaches every replica (a missing ON CLUSTER would
        # leave the other replicas without the table or with the old view).
        assert f"ON CLUSTER `{CLUSTER}`" in head, sql
        assert re.match(r"^(CREATE|ALTER TABLE|DROP TABLE IF EXISTS \S+ ON CLUSTER .* SYNC$)", head)


@pytest.mark.parametrize("cluster", ["", CLUSTER], ids=["single", "cluster"])
async def test_every_merge_tree_table_carries_its_deduplication_window(
    ch: AsyncClient, cluster: str
) -> None:
    """Without the window a retried insert is stored twice: fails for any table added
    without it, in either mode."""
    window = "replicated_deduplication_window" if cluster else "non_replicated_deduplication_window"
    other = "non_replicated_deduplication_window" if cluster else "replicated_deduplication_window"
    tables = 0
    for sql in all_statements(DATABASE, cluster):
        formatted = await parsed(ch, sql)
        created = _CREATE_TABLE.match(formatted)
        if created is None:
            assert "ENGINE" not in formatted, sql
            continue
        database, table = created.groups()
        if formatted.endswith("ENGINE = `Null`"):  # (formatQuery quotes this engine's name)
            assert INTAKE.match(table), sql
            continue
        tables += 1
        engine = _ENGINE.search(formatted)
        assert engine is not None, sql
        name, args = engine.groups()
        assert name.endswith("MergeTree"), sql
        settings = settings_of(formatted)
        assert other not in settings, sql
        if table not in NO_WINDOW:
            assert int(settings.get(window, "0")) >= 1000, sql
        if not cluster:
            assert not name.startswith("Replicated"), sql
            continue
        assert name.startswith("Replicated"), sql
        # The Keeper path names the table, whose name carries the generation.
        assert args == f"'/clickhouse/tables/{{shard}}/{database}/{table}', '{{replica}}'", sql
    # Every table was seen: the check above did not pass for want of tables.
    assert tables == sum(created_tables(DATABASE, g) for g in GENERATIONS) + len(NO_WINDOW)


def test_each_replicated_table_has_its_own_keeper_path_per_generation() -> None:
    paths = [
        path
        for generation in (1, 2, 3)
        for sql in table_statements(DATABASE, generation, CLUSTER)
        for path in re.findall(r"Replicated\w+\('([^']+)'", sql)
    ]
    assert len(paths) == sum(created_tables(DATABASE, g) for g in (1, 2, 3))
    assert len(set(paths)) == len(paths)
    assert all(re.search(r"_g[123]$", path) for path in paths)


def test_the_same_window_size_in_both_modes() -> None:
    single = table_statements(DATABASE, 1)
    clustered = table_statements(DATABASE, 1, CLUSTER)
    for one, many in zip(single, clustered, strict=True):
        assert re.findall(r"deduplication_window = (\d+)", one) == re.findall(
            r"deduplication_window = (\d+)", many
        )


class RecordingClient:
    """Stands in for clickhouse-connect: records DDL, answers an empty database."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        self.commands.append(sql)

    async def query(self, sql: str, **_: Any) -> Any:
        # Every look-up of prepare() reads one number: 0 generations, no retired table.
        return SimpleNamespace(result_rows=[[0]])


async def test_the_store_issues_every_ddl_statement_on_the_cluster() -> None:
    """What prepare (first start), a rebuild's new generation and its drop send."""
    client = RecordingClient()
    store = Store(cast(AsyncClient, client), DATABASE, CLUSTER)
    assert await store.prepare() == 1
    await store.drop_generation(2)
    await store.create_generation(2)
    await store.activate(2)
    await store.drop_generation(1)
    ddl = [sql for sql in client.commands if not sql.startswith("INSERT")]
    assert len(ddl) > 40
    assert all(f"ON CLUSTER `{CLUSTER}`" in sql for sql in ddl)
    drops = [sql for sql in ddl if sql.startswith("DROP")]
    assert drops and all(sql.endswith(" SYNC") for sql in drops)


# -- the setting --------------------------------------------------------------------------


def test_the_cluster_setting_is_read_once_into_the_settings() -> None:
    settings = ProjectorSettings.from_env({**SECRET, "TRACKER_CLICKHOUSE_CLUSTER": CLUSTER})
    assert settings.clickhouse_cluster == CLUSTER
    assert f"cluster={CLUSTER}" in repr(settings)


@pytest.mark.parametrize(
    "name", ["two words", "1st", "-x", "c`; DROP DATABASE x", "é", "x\n", "x" * 64]
)
def test_an_invalid_cluster_name_fails_at_startup_saying_why(name: str) -> None:
    with pytest.raises(ConfigError, match="TRACKER_CLICKHOUSE_CLUSTER must be a cluster name"):
        ProjectorSettings.from_env({**SECRET, "TRACKER_CLICKHOUSE_CLUSTER": name})
    with pytest.raises(ValueError, match="invalid ClickHouse cluster name"):
        table_statements(DATABASE, 1, name)


async def test_the_parser_check_has_teeth(ch: AsyncClient) -> None:
    """ON CLUSTER after a materialized view's TO is a syntax error: the order used above is
    the one ClickHouse reads, and a wrong statement would fail the parse test."""
    with pytest.raises(Exception, match="Syntax error"):
        await parsed(ch, f"CREATE MATERIALIZED VIEW d.v TO d.t ON CLUSTER `{CLUSTER}` AS SELECT 1")
