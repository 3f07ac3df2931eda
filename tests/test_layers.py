"""The dependency rules of DESIGN.md, checked on the source: `sim -> client -> hotline`,
`server -> hotline`, all -> `certs`; `server` and `client` never import each other; the
configuration-file plumbing both use (`settings`, pydantic) sits below them and above the
protocol, which never imports pydantic; and only the journal modules speak SQL (`server.store`
does so through `server.journal`'s connections)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAY_NOT_IMPORT = {
    "proto/hotline": {"server", "client", "sim", "settings", "pydantic"},
    "settings": {"server", "client", "sim", "certs"},
    "certs": {"hotline", "server", "client", "sim", "settings"},
    "server": {"client", "sim"},
    "client": {"server", "sim"},
    "sim": {"server"},
}
SQLITE = {
    "server/journal.py",  # the writer; it owns the schema
    "proto/hotline/journal_file.py",  # the journal file's read-only reader
    "sim/machine.py",  # reports sqlite3.sqlite_version with the machine's description, no SQL
}
POSTGRESQL = {  # the PostgreSQL driver and its pool, likewise only in the journal modules
    "server/journal_pg.py",  # the PostgreSQL backend of the writer
    "proto/hotline/journal_file.py",  # the read-only reader of a journal in PostgreSQL
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("folder", sorted(MAY_NOT_IMPORT))
def test_layers_import_only_downwards(folder: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in sorted(imports(path) & MAY_NOT_IMPORT[folder])
    ]
    assert wrong == []


def test_only_the_journal_modules_open_sqlite() -> None:
    users = {
        str(path.relative_to(ROOT))
        for folder in MAY_NOT_IMPORT
        for path in (ROOT / folder).rglob("*.py")
        if "sqlite3" in imports(path)
    }
    assert users <= SQLITE


def test_only_the_journal_modules_open_postgresql() -> None:
    users = {
        str(path.relative_to(ROOT))
        for folder in MAY_NOT_IMPORT
        for path in (ROOT / folder).rglob("*.py")
        if imports(path) & {"psycopg", "psycopg_pool", "psycopg2"}
    }
    assert users <= POSTGRESQL
