"""The ClickHouse schema as SQL files: ``meta.sql`` once per database, ``tables.sql`` once per
generation, ``views.sql`` (the public surface) pointed at the live generation.

Statements are templated with ``{database}`` and ``{generation}`` only; every other brace
(the parameterized view's ``{universe:String}``) is left as it is.
"""

from __future__ import annotations

import re
from importlib import resources

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def valid_database_name(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))


def _load(name: str, database: str, generation: int) -> list[str]:
    if not valid_database_name(database):
        raise ValueError(f"invalid ClickHouse database name {database!r}")
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
    return result


def meta_statements(database: str) -> list[str]:
    return [f"CREATE DATABASE IF NOT EXISTS {database}", *_load("meta.sql", database, 0)]


def table_statements(database: str, generation: int) -> list[str]:
    return _load("tables.sql", database, generation)


def view_statements(database: str, generation: int) -> list[str]:
    return _load("views.sql", database, generation)


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
