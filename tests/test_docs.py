"""The documents hold together: the README stays short, every relative link of the README and
docs/ resolves (to a file, and a ``#anchor`` to a heading of it), and the configuration table
of docs/operating.md lists exactly the TRACKER_* variables the settings read, with their
defaults."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
# Where the settings objects read their variables: EdgeSettings, ProjectorSettings,
# KafkaSettings, the logging set-up, StackSettings, PrometheusSettings, and the shell's context
# of the local stack (schemas/context.py).
SETTINGS_MODULES = (
    "ingest/settings.py",
    "projector/settings.py",
    "schemas/kafka_settings.py",
    "schemas/logs.py",
    "compose/settings.py",
    "compose/prometheus.py",
    "schemas/context.py",
)
VARIABLE = re.compile(r"TRACKER_[A-Z0-9_]+")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.M)


def prose(markdown: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", markdown)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower-cased, without punctuation, spaces as -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(prose(path.read_text(encoding="utf-8"))):
        base = anchor(heading)
        name, n = base, 0
        while name in found:  # GitHub numbers repeated headings: x, x-1, x-2
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def relative_links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(path.read_text(encoding="utf-8")))
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I)  # http:, mailto:, ...
    ]


def test_the_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference to docs/"


def test_every_relative_link_resolves_to_a_file_and_heading() -> None:
    broken: list[str] = []
    checked = 0
    for document in DOCUMENTS:
        for target in relative_links(document):
            checked += 1
            file_part, _, fragment = target.partition("#")
            linked = (document.parent / unquote(file_part)).resolve() if file_part else document
            where = f"{document.relative_to(ROOT)}: ({target})"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif fragment and (linked.suffix != ".md" or fragment not in anchors(linked)):
                broken.append(f"{where}: no heading with this anchor in {linked.name}")
    assert checked > 50, checked
    assert not broken, "\n".join(broken)


def test_anchors_follow_githubs_rules() -> None:
    assert anchor("Refunds (server to server only)") == "refunds-server-to-server-only"
    assert anchor("`make` targets") == "make-targets"
    assert anchor("Where ClickHouse's time goes (x)") == "where-clickhouses-time-goes-x"
    assert anchor("Why 0.50: the_limit") == "why-050-the_limit"


def settings_sources() -> list[Path]:
    paths = [ROOT / module for module in SETTINGS_MODULES]
    assert all(p.exists() for p in paths), paths
    return [p for p in paths if p.exists()]


def literal(node: ast.expr, constants: dict[str, object]) -> object | None:
    """The value of a default written as a literal (or a constant expression, or a module
    constant of the settings modules); None when it is computed."""
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if not all(isinstance(n, ast.Constant | ast.BinOp | ast.UnaryOp | ast.operator | ast.unaryop)
               for n in ast.walk(node)):  # fmt: skip
        return None
    value: object = eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})
    return value


def as_text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def code_settings() -> tuple[set[str], dict[str, set[str]]]:
    """Every TRACKER_* name the settings modules hold as a string, and the literal defaults
    they read each with (``env.integer("TRACKER_X", 10, ...)``: 10)."""
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in settings_sources()]
    constants: dict[str, object] = {}
    for tree in trees:
        for stmt in tree.body:
            if isinstance(stmt, ast.AnnAssign):
                targets: list[ast.expr] = [stmt.target]
            elif isinstance(stmt, ast.Assign):
                targets = stmt.targets
            else:
                continue
            name, value = targets[0], stmt.value
            if len(targets) == 1 and isinstance(name, ast.Name) and isinstance(value, ast.Constant):
                constants[name.id] = value.value
    names: set[str] = set()
    defaults: dict[str, set[str]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and VARIABLE.fullmatch(str(node.value)):
                names.add(str(node.value))
            if isinstance(node, ast.Call) and len(node.args) >= 2:
                first = node.args[0]
                if isinstance(first, ast.Constant) and VARIABLE.fullmatch(str(first.value)):
                    default = literal(node.args[1], constants)
                    if default is not None:
                        defaults.setdefault(str(first.value), set()).add(as_text(default))
    return names, defaults


def configuration_table() -> dict[str, str]:
    """docs/operating.md's configuration table: variable -> its default cell."""
    text = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Configuration\n") :]
    section = section[: section.index("\n## ", 1)]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `TRACKER_"):
            name = re.fullmatch(r"`(TRACKER_[A-Z0-9_]+)`", cells[0])
            assert name is not None, f"one variable per row: {line}"
            assert name.group(1) not in rows, f"listed twice: {name.group(1)}"
            rows[name.group(1)] = cells[1]
    return rows


def test_the_configuration_table_lists_exactly_the_variables_the_settings_read() -> None:
    names, _ = code_settings()
    assert {"TRACKER_SECRET", "TRACKER_KAFKA_BOOTSTRAP", "TRACKER_DATA_DIR"} <= names
    table = set(configuration_table())
    assert not names - table, f"read by the settings, missing from the table: {names - table}"
    assert not table - names, f"in the table, read by no settings: {table - names}"


def test_the_configuration_tables_defaults_are_the_codes() -> None:
    _, defaults = code_settings()
    wrong: list[str] = []
    checked = 0
    for name, cell in configuration_table().items():
        shown = re.fullmatch(r"`([^`]*)`", cell)
        if shown is None or name not in defaults:  # "(required)", or computed in the code
            continue
        checked += 1
        if shown.group(1) not in defaults[name]:
            wrong.append(f"{name}: the table says {cell}, the code {sorted(defaults[name])}")
    assert checked >= 35, checked
    assert not wrong, "\n".join(wrong)
