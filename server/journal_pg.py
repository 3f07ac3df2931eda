"""A journal in PostgreSQL: the backend `server.journal` uses when the gateway's `journal`
setting is a `postgresql://` URL (psycopg 3 and its connection pool).

Everything that makes a journal a journal is `server.journal`'s and is the same here: the
writer thread, group commit with a SAVEPOINT per operation, the hash chain, the tables and
their uniqueness, nothing reported before its COMMIT returns. What differs is this module's:

* **Dialect.** The journal's SQL is written with `?` placeholders and statements both engines
  take (`INSERT ... ON CONFLICT DO NOTHING`, partial indexes); the session turns `?` into
  psycopg's `%s`, the schema takes `BIGINT` and `BYTEA`, and rows answer by name and index as
  `sqlite3.Row` does (`hotline.journal_file.Row`).
* **Durability.** The server must run with `fsync = on` and `full_page_writes = on` (a journal
  refuses to open otherwise); the writer's session sets `synchronous_commit = on` if the server
  default is `off`. A COMMIT has then been flushed to the server's WAL when it returns.
* **The lock.** One writer per journal: the writer's own connection takes a session-level
  advisory lock (`pg_try_advisory_lock`, a key derived from the party). The lock lives exactly
  as long as that connection, the one every write goes through, so a gateway that lost its
  connection has lost its lock with it, and cannot write any more: the writer checks its
  connection whenever it has been idle for a second, and after a lost connection the journal
  refuses every write (`check_file()` says why; the gateway stops, and a standby waiting on
  the lock takes over). On TCP, the session sets short keepalives so the server notices a
  vanished gateway (and frees its lock) within about 10 s.
* **Reads** (operator queries, the link's reads) go through a small connection pool, never
  through the writer's connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from hotline.journal_file import pg_sql, redact, row_factory
from server.journal import JournalError, JournalInUse, Session, check_meta, schema

log = logging.getLogger("hotline.journal")

LOCK_CLASS = 0x686C  # the first key of the journal's advisory lock ("hl")
READ_POOL_SIZE = 4  # connections for reads beside the writer's
CONNECT_TIMEOUT_S = 10
# On TCP: how soon each side notices the other has vanished (keepalive idle, interval, count).
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


class JournalUnreachable(JournalError):
    """The journal's database cannot be reached (or refused the connection)."""


def lock_key(party: str) -> int:
    """The second key of a party's journal lock: 31 bits of SHA-256 of the party code (two
    parties' journals in two schemas of one database lock independently)."""
    digest = hashlib.sha256(b"hotline-journal\x00" + party.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class _PgSession:
    """The writer's connection (autocommit: the journal says BEGIN and COMMIT itself)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        cursor = self.conn.cursor()
        cursor.executemany(pg_sql(sql), rows)
        return cursor

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        with contextlib.suppress(psycopg.Error):  # a connection gone took the transaction
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


class PostgresBackend:
    """A journal in a PostgreSQL database (`url`: a libpq connection URL; keep the password in
    `~/.pgpass` or `PGPASSWORD`, not in the gateway's configuration)."""

    idle_check_s: float | None = 1.0

    def __init__(self, url: str, *, read_pool_size: int = READ_POOL_SIZE) -> None:
        self.url = url
        self.location = redact(url)
        self.read_pool_size = read_pool_size
        self._lost = ""
        self._writer: psycopg.Connection[Any] | None = None
        self._pool: ConnectionPool[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn: psycopg.Connection[Any] = psycopg.connect(
                self.url,
                autocommit=True,
                row_factory=row_factory,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="hotline-gateway",
                **KEEPALIVES,
            )
        except psycopg.Error as exc:
            raise JournalUnreachable(
                f"cannot reach the journal database {self.location}: {_first_line(exc)}"
            ) from None
        return conn

    def open_writer(self, party: str) -> Session:
        conn = self._connect()
        try:
            self._check_durability(conn)
            key = lock_key(party)
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, key)).fetchone()
            if row is None or not row[0]:
                holder = conn.execute(
                    "SELECT a.pid, coalesce(host(a.client_addr), 'local') FROM pg_locks l"
                    " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
                    " AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s"
                    " AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())",
                    (LOCK_CLASS, key),
                ).fetchone()
                who = f"database session {holder[0]} from {holder[1]}" if holder else "another"
                raise JournalInUse(
                    f"journal {self.location} is in use by another gateway ({who} holds its lock)"
                )
            session = _PgSession(conn)
            session.begin()
            conn.execute(schema(integer="BIGINT", blob="BYTEA"))
            session.commit()
            check_meta(session, party, self.location)
            pool: ConnectionPool[Any] = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.read_pool_size,
                kwargs={
                    "autocommit": True,
                    "row_factory": row_factory,
                    "application_name": "hotline-gateway-read",
                    **KEEPALIVES,
                },
                name=f"journal-read-{party}",
                open=True,
            )
            try:
                pool.wait(timeout=CONNECT_TIMEOUT_S)
            except BaseException:
                pool.close()
                raise
            self._pool = pool
        except psycopg.Error as exc:
            conn.close()
            raise JournalUnreachable(
                f"journal database {self.location}: {_first_line(exc)}"
            ) from None
        except BaseException:
            conn.close()
            raise
        self._writer = conn
        return session

    def _check_durability(self, conn: psycopg.Connection[Any]) -> None:
        """Refuse a server that may lose commits; make this session's commits synchronous."""
        for name in ("fsync", "full_page_writes"):
            row = conn.execute(f"SHOW {name}").fetchone()  # a fixed name
            if row is None or row[0] != "on":
                raise JournalError(
                    f"journal database {self.location} runs with {name} = "
                    f"{row[0] if row else '?'}: a commit could be lost on a crash; set "
                    f"{name} = on in postgresql.conf"
                )
        row = conn.execute("SHOW synchronous_commit").fetchone()
        if row is None or row[0] == "off":
            conn.execute("SET synchronous_commit = on")
        if not conn.info.host.startswith("/"):  # on TCP: free the lock of a vanished gateway
            conn.execute("SET tcp_keepalives_idle = 5")
            conn.execute("SET tcp_keepalives_interval = 2")
            conn.execute("SET tcp_keepalives_count = 3")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        assert self._pool is not None, "the journal is not open"
        with self._pool.connection() as conn:
            rows: list[Any] = conn.execute(pg_sql(sql), tuple(params)).fetchall()
            return rows

    def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        return [str(row[0]) for row in self.query(f"EXPLAIN {sql}", params)]

    def check(self) -> str:
        return self._lost

    def lost(self, exc: BaseException) -> str:
        conn = self._writer
        if conn is not None and (conn.broken or conn.closed) and not self._lost:
            self._lost = (
                f"journal {self.location}: lost the connection to the database "
                f"({_first_line(exc)}); its lock went with it and a standby may serve now"
            )
        return self._lost

    def ping(self, session: Session) -> None:
        session.execute("SELECT 1")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._writer is not None:
            self._writer.close()  # releases the lock
            self._writer = None
