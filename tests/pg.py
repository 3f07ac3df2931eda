"""The tests' throwaway PostgreSQL server: `sim.postgres` (one implementation, shared with
`hotline sim bench`), plus `execute`, which the tests use to tamper with or look into a journal
database behind its gateway's back (with the driver, which `sim` may not import)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from sim import postgres
from sim.postgres import PostgresUnavailable

__all__ = ["PostgresServer", "PostgresUnavailable", "running", "start", "stop"]


class PostgresServer(postgres.PostgresServer):
    def execute(
        self, url: str, sql: str, params: tuple[object, ...] = ()
    ) -> list[tuple[object, ...]]:
        """Run one statement on a database as its superuser (to tamper, or to look)."""
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []


def start() -> PostgresServer:
    """Make and start a server (raises PostgresUnavailable with the reason)."""
    return PostgresServer.start()


stop = postgres.stop


@contextlib.contextmanager
def running() -> Iterator[PostgresServer]:
    server = start()
    try:
        yield server
    finally:
        stop(server)
