"""The single-server DDL, rollups rendered from their descriptions included, is the DDL
captured in tests/fixtures/ddl_g1.sql (first from the hand-written files, re-captured on
purpose when the rollups became per currency): a change to what ClickHouse sees shows here,
byte for byte, and is made deliberately."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.ddl import ROLLUPS, meta_statements, table_statements, view_statements

FIXTURE = Path(__file__).parent.parent / "fixtures" / "ddl_g1.sql"
DATABASE = "tracker"


def captured() -> dict[str, list[str]]:
    """The fixture's statements per part (``-- @meta``, ``-- @tables``, ``-- @views``)."""
    parts: dict[str, list[str]] = {}
    for section in FIXTURE.read_text(encoding="utf-8").split("\n-- @")[1:]:
        name, _, body = section.partition("\n")
        parts[name] = [sql.strip() for sql in body.split(";") if sql.strip()]
    return parts


def test_the_rendered_ddl_is_the_captured_ddl_statement_for_statement() -> None:
    expected = captured()
    assert expected.keys() == {"meta", "tables", "views"}
    assert meta_statements(DATABASE) == expected["meta"]
    assert table_statements(DATABASE, 1) == expected["tables"]
    assert view_statements(DATABASE, 1) == expected["views"]


def test_the_rendered_ddl_is_the_captured_ddl_whatever_the_generation() -> None:
    # In the fixture, "_g1" is only ever a name's generation suffix.
    expected = captured()
    assert all(not re.search(r"_g1\d", sql) for sql in expected["tables"] + expected["views"])
    assert table_statements(DATABASE, 7) == [s.replace("_g1", "_g7") for s in expected["tables"]]
    assert view_statements(DATABASE, 7) == [s.replace("_g1", "_g7") for s in expected["views"]]


def test_each_rollup_is_a_table_its_materialized_view_and_a_public_view() -> None:
    tables = "\n".join(table_statements(DATABASE, 1))
    views = "\n".join(view_statements(DATABASE, 1))
    for rollup in ROLLUPS:
        assert f"CREATE TABLE IF NOT EXISTS {DATABASE}.{rollup.table}_g1\n" in tables
        assert f"MATERIALIZED VIEW IF NOT EXISTS {DATABASE}.{rollup.table}_mv_g1\n" in tables
        refunds_view = f"MATERIALIZED VIEW IF NOT EXISTS {DATABASE}.{rollup.table}_refunds_mv_g1\n"
        assert refunds_view in tables
        assert f"CREATE OR REPLACE VIEW {DATABASE}.{rollup.view} AS\n" in views
    assert not any("{rollup" in sql for sql in table_statements(DATABASE, 1))


def test_every_rollup_is_keyed_by_currency() -> None:
    for sql in table_statements(DATABASE, 1) + view_statements(DATABASE, 1):
        if "_rollup_g1" in sql and "GROUP BY" in sql:
            # The public views group in a subquery (closed by the last parenthesis).
            assert sql.rstrip().removesuffix(")").endswith(", currency"), sql


def test_a_generation_can_be_prepared_without_its_rollups() -> None:
    everything = table_statements(DATABASE, 1)
    without = table_statements(DATABASE, 1, rollups=False)
    assert without == [sql for sql in everything if "_rollup_" not in sql]
    # Per rollup: its table, the columns added in place, its views of sales and of refunds.
    assert len(everything) - len(without) == 4 * len(ROLLUPS)
