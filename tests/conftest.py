"""Fixtures shared by every test folder: a throwaway PostgreSQL server, and the journal
backends the journal and store tests run against (SQLite and PostgreSQL, parametrized)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import pg

BACKENDS = ("sqlite", "postgresql")
JournalAt = Callable[[str], "Path | str"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.PostgresServer]:
    """One PostgreSQL server for the whole run, started on first use. Where none can start, the
    tests that need it are skipped on a developer's machine, and FAIL in CI (`CI` set): CI
    installs PostgreSQL (`.ci/run`), so a server that does not start there is a failure."""
    try:
        server = pg.start()
    except pg.PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests, but no server could start: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        pg.stop(server)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The journal backend a test runs on (each journal and store test runs on both)."""
    return str(request.param)


@pytest.fixture
def journal_at(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> JournalAt:
    """`journal_at(name)`: where a test's journal `name` lives on this backend: a SQLite file in
    the test's folder, or a new database on the session's PostgreSQL server (one per name)."""
    if backend == "sqlite":
        return lambda name: tmp_path / name
    server: pg.PostgresServer = request.getfixturevalue("postgres")
    made: dict[str, str] = {}

    def at(name: str) -> str:
        if name not in made:
            made[name] = server.new_database()
        return made[name]

    return at


@pytest.fixture
def tamper(backend: str, request: pytest.FixtureRequest) -> Callable[..., None]:
    """`tamper(location, sql, params)`: edit a journal behind its gateway's back, as a forger
    with access to the file or the database would (the journal's SQL, `?` placeholders)."""
    if backend == "sqlite":
        import sqlite3

        def edit_file(location: Path | str, sql: str, params: tuple[object, ...] = ()) -> None:
            with sqlite3.connect(location) as conn:
                conn.execute(sql, params)

        return edit_file
    server: pg.PostgresServer = request.getfixturevalue("postgres")

    def edit_database(location: Path | str, sql: str, params: tuple[object, ...] = ()) -> None:
        server.execute(str(location), sql.replace("?", "%s"), params)

    return edit_database
