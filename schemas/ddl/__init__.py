"""The ClickHouse schema as ordered, idempotent SQL files under ``schemas/ddl/``."""

from __future__ import annotations

import re
from importlib import resources

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def valid_database_name(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))


def statements(database: str) -> list[str]:
    """Every DDL statement, in file order, for ``database`` (created first)."""
    if not valid_database_name(database):
        raise ValueError(f"invalid ClickHouse database name {database!r}")
    result = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    files = sorted(
        (
            entry
            for entry in resources.files("schemas.ddl").iterdir()
            if entry.name.endswith(".sql")
        ),
        key=lambda entry: entry.name,
    )
    for entry in files:
        text = entry.read_text(encoding="utf-8")
        for statement in text.split(";"):
            sql = "\n".join(
                line for line in statement.splitlines() if not line.lstrip().startswith("--")
            ).strip()
            if sql:
                result.append(sql.replace("{database}", database))
    return result
