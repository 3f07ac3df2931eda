"""The gateway's journal: an append-only, hash-chained, durable record in SQLite (a file, the
default) or PostgreSQL (a `postgresql://` URL: `server.journal_pg`).

Every message, receipt, rejection, acknowledgement, escalation, link event, checkpoint and
security refusal is an *entry*. Entries are numbered 1, 2, 3, ... with no gaps, and each
carries `hash = SHA-256(prev_hash || encode(entry))`, so editing, inserting, deleting or
truncating entries breaks the chain; the peer's signed checkpoints of our head make a rewrite
of the whole chain detectable too.

Durability: SQLite in WAL mode with `synchronous=FULL`, so a COMMIT has been fsynced when it
returns; PostgreSQL with `fsync` and `synchronous_commit` on (`server.journal_pg`). Nothing is
reported journaled (no reply, no receipt, no event) before its COMMIT returns.

Backends: everything below (the writer thread, group commit, savepoints, the chain, the
tables) is the same on both. A `Backend` supplies the writer's `Session` with the lock held
and the schema in place, the reads, and the periodic check; the journal's SQL (here and in
`server.store`) is written once, with `?` placeholders and statements both engines take
(`INSERT ... ON CONFLICT DO NOTHING`, partial indexes), and the backend adapts the rest
(placeholders, `BIGINT`/`BYTEA`, rows by name). The schema carries its version in `meta`;
`MIGRATIONS` take an older one forward at start; a newer one is refused.

Group commit: one writer thread owns the write connection. Callers submit *operations*
(functions that run inside a transaction); the writer takes every operation waiting, runs each
inside its own SAVEPOINT (so one failing operation does not spoil the rest), commits once, and
then resolves all their futures. Under load hundreds of entries share one fsync. An *urgent*
operation (journaling a FLASH or IMMEDIATE message) does not wait for the group in progress:
it joins the transaction at the next operation boundary, which then commits at once, and the
rest of the group goes into the next commit (their order among themselves is kept).

Beside the chain, mutable *index* tables (messages, settlements) answer queries quickly; they
are updated in the same transaction as the entries they derive from, and
`hotline journal verify` recomputes them from the chain and reports every row that disagrees.

One gateway owns one journal: opening a file takes an exclusive `flock` on a lock file beside
it (`<journal>.lock`, holding the owner's pid), and opening a database takes an advisory lock
on the writer's connection, so a second gateway on the same journal is refused
(`JournalInUse`) instead of interleaving its writes (or, configured as a standby, waits). While open, `check_file()` tells whether
the file at the journal's path is still the one opened (a deleted or replaced journal keeps
taking writes into an inode nobody will read again), or for a database whether the writer's
connection, and so its lock, still holds; the gateway calls it on a timer and, when it is not,
calls `fail()`, after which every write is refused.

What an entry is and how the chain is hashed is the journal file's format, in
`hotline.journal_file`, beside the read-only `JournalReader` that everyone who is not this
gateway reads a journal file with. This module writes the file and owns its schema (the tables
below and `SCHEMA_VERSION`); with `server.store` and `hotline.journal_file`, it is all the SQL
there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hotline import link
from hotline.journal_file import ENTRY_COLUMNS, GENESIS, entry_hash, entry_of, is_database_url

# What an entry is belongs to the journal file's format; the gateway imports it from here.
from hotline.journal_file import Entry as Entry
from hotline.journal_file import Kind as Kind
from hotline.v1 import operator_pb2
from hotline.wire import batch_receipt_from_bytes

T = TypeVar("T")
log = logging.getLogger("hotline.journal")

SCHEMA_VERSION = 4  # 2: batch receipts (link protocol 2); 3: chains and expiry; 4: lanes (3)

# The statements that take a journal's schema from version N to N + 1, applied in order at
# start, in one transaction, by `check_meta` (both backends: write them in the SQL both take).
# Versions 1 and 2 were SQLite-only prototypes whose new columns are computed from the entries'
# bodies, not by SQL: they are refused (start a new journal), never half-migrated. Version 3
# holds link protocol 2's single sequence space per direction, which has no lanes to map to
# link protocol 3's: refused too.
MIGRATIONS: dict[int, tuple[str, ...]] = {}

JOURNALED = operator_pb2.DELIVERY_STATE_JOURNALED
DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED

# The messages that may still come due: not yet escalated (outbound) or re-alerted (inbound),
# with a deadline (an acknowledgement has none), neither acknowledged nor rejected, not marked
# expired. The partial index `messages_due` holds exactly these, so the overdue check reads only
# what may be due, whatever the journal's size: a message leaves the index when it is
# acknowledged, rejected, escalated or marked expired, since each of those updates makes the
# condition false. A query uses the index only
# if its WHERE contains these terms as written (SQLite proves a partial index usable by matching
# terms: `state IN (?, ?)` with bound values, or the list in another order, does not match), so
# queries use these constants, never a copy.
MAY_COME_DUE = (
    f"escalated = 0 AND expired = 0 AND deadline_ns > 0 AND state IN ({JOURNALED}, {DELIVERED})"
)
# The messages past their deadline, still unanswered and not expired (`overdue` on the operator
# API).
OVERDUE = f"escalated = 1 AND expired = 0 AND state IN ({JOURNALED}, {DELIVERED})"
# The unanswered messages with a deadline and an expiry not yet marked passed, whether due or
# overdue (partial index `messages_expiring`): the deadline check marks each expired once, and
# it leaves both sets above.
EXPIRING = (
    f"expired = 0 AND expire_ns > 0 AND deadline_ns > 0 AND state IN ({JOURNALED}, {DELIVERED})"
)


def schema(integer: str = "INTEGER", blob: str = "BLOB") -> str:
    """The journal's tables in one SQL dialect: `integer` is the 64-bit integer type (SQLite's
    `INTEGER`, PostgreSQL's `BIGINT`) and `blob` the bytes type (`BLOB`, `BYTEA`). Everything
    else (partial indexes, `CREATE ... IF NOT EXISTS`) is written so both engines take it."""
    return _SCHEMA.replace("INTEGER", integer).replace("BLOB", blob)


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    position   INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,
    time_ns    INTEGER NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    party      TEXT NOT NULL DEFAULT '',
    sequence   INTEGER NOT NULL DEFAULT 0,
    body       BLOB NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_message ON entries(message_id) WHERE message_id != '';
-- One row per message ever journaled, in or out. message_id is unique forever.
CREATE TABLE IF NOT EXISTS messages (
    message_id        TEXT PRIMARY KEY,
    direction         INTEGER NOT NULL,      -- hotline.v1.Direction
    sender_party      TEXT NOT NULL,
    body_type         INTEGER NOT NULL,
    precedence        INTEGER NOT NULL,
    status            INTEGER NOT NULL,
    state             INTEGER NOT NULL,      -- hotline.v1.DeliveryState
    position          INTEGER NOT NULL,      -- entry that journaled it
    journal_time_ns   INTEGER NOT NULL,
    deadline_ns       INTEGER NOT NULL,
    sequence          INTEGER NOT NULL DEFAULT 0,
    deliver_time_ns   INTEGER NOT NULL DEFAULT 0,
    ack_time_ns       INTEGER NOT NULL DEFAULT 0,
    ack_message_id    TEXT NOT NULL DEFAULT '',
    digest            BLOB NOT NULL,
    escalated         INTEGER NOT NULL DEFAULT 0,
    rejection_reason  TEXT NOT NULL DEFAULT '',
    rejection_detail  TEXT NOT NULL DEFAULT '',
    action            INTEGER NOT NULL DEFAULT 0, -- hotline.v1.Action
    refers_to         TEXT NOT NULL DEFAULT '',  -- what an UPDATE/CANCEL/acknowledgement is about
    expire_ns         INTEGER NOT NULL DEFAULT 0, -- Envelope.expire_time; 0: never
    expired           INTEGER NOT NULL DEFAULT 0  -- 1 once seen past expire_ns (leaves the due)
);
CREATE INDEX IF NOT EXISTS messages_state ON messages(direction, state);
CREATE INDEX IF NOT EXISTS messages_refers ON messages(refers_to) WHERE refers_to != '';
CREATE INDEX IF NOT EXISTS messages_time ON messages(journal_time_ns);
CREATE INDEX IF NOT EXISTS messages_due ON messages(deadline_ns) WHERE {MAY_COME_DUE};
CREATE INDEX IF NOT EXISTS messages_overdue ON messages(deadline_ns) WHERE {OVERDUE};
CREATE INDEX IF NOT EXISTS messages_expiring ON messages(expire_ns) WHERE {EXPIRING};
-- The link's settlements, per sending party and lane (a precedence: each lane has sequences
-- of its own): (party, lane, sequence) is unique forever.
CREATE TABLE IF NOT EXISTS settlements (
    sender_party TEXT NOT NULL,
    lane         INTEGER NOT NULL,            -- hotline.v1.Precedence
    sequence     INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    outcome      TEXT NOT NULL,              -- 'receipt' or a RejectReason name
    digest       BLOB NOT NULL,
    batch_first  INTEGER NOT NULL DEFAULT 0, -- first sequence of the batch receipt settling it
    detail       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (sender_party, lane, sequence)
);
CREATE UNIQUE INDEX IF NOT EXISTS settlements_receipt
    ON settlements(message_id) WHERE outcome = 'receipt';
-- The batch receipts this gateway signed for the peer's batches (the receiving end's archive:
-- resent in Welcomes, for resends, and as the original receipt of a duplicate).
CREATE TABLE IF NOT EXISTS batch_receipts (
    sender_party   TEXT NOT NULL,
    lane           INTEGER NOT NULL,         -- hotline.v1.Precedence
    first_sequence INTEGER NOT NULL,
    last_sequence  INTEGER NOT NULL,
    receipt        BLOB NOT NULL,            -- serialized SignedPayload(BatchReceiptBody)
    PRIMARY KEY (sender_party, lane, first_sequence)
);
"""


class JournalError(Exception):
    """The journal cannot do what was asked (closed, corrupt, or a constraint broken)."""


class JournalInUse(JournalError):
    """Another process holds the journal's lock: one gateway owns one journal."""


def lock_path(path: Path) -> Path:
    """The lock file beside a journal (`jp.db` -> `jp.db.lock`)."""
    return path.with_name(path.name + ".lock")


def take_lock(path: Path) -> int:
    """Take the exclusive lock of the journal at `path`: returns the lock file's descriptor
    (closing it releases the lock). Raises `JournalInUse` naming the holder's pid."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise JournalInUse(f"journal {path} is in use by pid {holder}") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


class Session(Protocol):
    """One connection of a backend, as the journal's writer uses it: the SQL it is given uses
    `?` placeholders and the statements both engines take; the session adapts the rest."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...
    def row(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...  # never raises: the transaction is abandoned either way
    def close(self) -> None: ...


class Backend(Protocol):
    """The database a journal lives in: SQLite (a file, the default) or PostgreSQL (a
    `postgresql://` URL, `server.journal_pg`). The writer thread, group commit, the hash chain
    and every rule of the journal are the same on both; a backend supplies connections that
    take and hold the journal's lock (one writer per journal), the schema in its dialect, the
    read side, and the check the gateway runs on a timer."""

    location: str  # for messages: the file, or the URL without its password
    # How long the writer may sit idle before it checks its connection (None: never; a SQLite
    # file has no connection to lose).
    idle_check_s: float | None

    def open_writer(self, party: str) -> Session:
        """The writer's session: the lock taken, the schema created or migrated, the journal
        checked to be `party`'s (JournalInUse, JournalError otherwise)."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read outside the writer (committed state), by column name or index."""
        ...

    def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]: ...
    def check(self) -> str: ...  # "" while the journal is still this gateway's, else why not
    def lost(self, exc: BaseException) -> str: ...  # after a failed commit: why no write may follow
    def ping(
        self, session: Session
    ) -> None: ...  # the idle check (raises if the connection is gone)
    def close(self) -> None: ...


def backend_for(location: Path | str) -> Backend:
    """The backend of a configured journal: a `postgresql://` URL or a SQLite file path."""
    if is_database_url(location):
        from server.journal_pg import PostgresBackend  # only deployments on PostgreSQL load it

        return PostgresBackend(str(location))
    return SqliteBackend(Path(location))


class _SqliteSession:
    """A SQLite connection: it speaks the journal's SQL as written."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.execute = conn.execute
        self.executemany = conn.executemany

    def row(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        cursor = self.conn.cursor()
        cursor.row_factory = sqlite3.Row
        row: sqlite3.Row | None = cursor.execute(sql, params).fetchone()
        return row

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


class SqliteBackend:
    """A journal in one SQLite file, WAL mode with `synchronous=FULL` (a COMMIT has been
    fsynced when it returns). The lock is an exclusive `flock` on `<journal>.lock`; `check()`
    tells whether the file at the path is still the one opened."""

    idle_check_s: float | None = None

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._lock_fd: int | None = None
        self._identity = (0, 0)
        self._read: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def open_writer(self, party: str) -> Session:
        self._lock_fd = take_lock(self.path)
        try:
            session = _SqliteSession(self._connect())
            session.conn.executescript(schema())
            check_meta(session, party, self.location)
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)  # the file opened, for check()
            self._read = self._connect()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        return session

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        assert self._read is not None
        with self._read_lock:
            self._read.row_factory = sqlite3.Row
            return self._read.execute(sql, params).fetchall()

    def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        return [str(row["detail"]) for row in self.query(f"EXPLAIN QUERY PLAN {sql}", params)]

    def check(self) -> str:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"journal {self.path} was deleted while the gateway was running"
        except OSError as exc:
            return f"journal {self.path} cannot be checked: {exc}"
        if (st.st_dev, st.st_ino) != self._identity:
            return f"journal {self.path} was replaced by another file while the gateway was running"
        return ""

    def lost(self, exc: BaseException) -> str:
        return ""  # a failed commit of a file loses that commit only

    def ping(self, session: Session) -> None:
        pass

    def close(self) -> None:
        if self._read is not None:
            with self._read_lock:
                self._read.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def check_meta(session: Session, party: str, location: str) -> None:
    """Whose journal this is and its schema: a new journal is marked `party`'s at
    `SCHEMA_VERSION`; an older schema is migrated (`MIGRATIONS`, in one transaction); a newer
    one, or another party's journal, is refused."""
    rows = {r[0]: r[1] for r in session.execute("SELECT key, value FROM meta").fetchall()}
    if not rows:
        session.begin()
        session.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("party", party)],
        )
        session.commit()
        return
    if rows.get("party") != party:
        raise JournalError(
            f"{location} is party {rows.get('party')}'s journal, not party {party}'s"
        )
    found = rows.get("schema_version", "")
    version = int(found) if found.isdigit() else -1
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"{location} has journal schema {found}, newer than this gateway's "
            f"({SCHEMA_VERSION}): run the hotline release that wrote it, or a later one"
        )
    if version == SCHEMA_VERSION:
        return
    if version < 0 or any(v not in MIGRATIONS for v in range(version, SCHEMA_VERSION)):
        raise JournalError(
            f"{location} has journal schema {found}, which this gateway cannot migrate to "
            f"{SCHEMA_VERSION}"
        )
    session.begin()
    try:
        for v in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[v]:
                session.execute(statement)
            log.warning("journal %s: schema migrated from %d to %d", location, v, v + 1)
        session.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise


class Txn:
    """The writer's view inside one operation: append entries and update the index."""

    def __init__(self, journal: Journal, session: Session) -> None:
        self._journal = journal
        self.session = session
        self.appended: list[Entry] = []

    def append(
        self,
        kind: Kind,
        body: bytes,
        *,
        message_id: str = "",
        party: str = "",
        sequence: int = 0,
        time_ns: int | None = None,
    ) -> Entry:
        j = self._journal
        position = j._head_position + 1
        when = time.time_ns() if time_ns is None else time_ns
        digest = entry_hash(
            j._head_hash, position, kind.value, when, message_id, party, sequence, body
        )
        entry = Entry(position, kind, when, message_id, party, sequence, body, j._head_hash, digest)
        self.session.execute(
            "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?)",
            (position, kind.value, when, message_id, party, sequence, body, j._head_hash, digest),
        )
        j._head_position, j._head_hash = position, digest
        self.appended.append(entry)
        return entry

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement (`?` placeholders); a cursor to fetch its rows from."""
        return self.session.execute(sql, params)

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """One row, by column name, as this transaction sees it (its own writes included)."""
        return self.session.row(sql, params)

    def attach(self, entry: Entry, event: object) -> None:
        """Give an entry of this transaction the event it stands for (published with it)."""
        for index in range(len(self.appended) - 1, -1, -1):
            if self.appended[index].position == entry.position:
                self.appended[index] = replace(entry, event=event)
                return

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self.session.executemany(sql, rows)


Operation = Callable[[Txn], T]


@dataclass
class _Job:
    operation: Operation[Any]
    future: Future[Any]


_WAKE: Any = object()  # wakes the writer for an urgent job (which waits in `_urgent`)


def _running(jobs: list[_Job]) -> list[_Job]:
    """The jobs still wanted: a caller that gave up (its task was cancelled) cancelled its
    future, so its operation is skipped as if never submitted. Once running, a future cannot
    be cancelled any more, so every result can be delivered."""
    return [job for job in jobs if job.future.set_running_or_notify_cancel()]


@dataclass
class JournalStats:
    commits: int = 0
    operations: int = 0
    entries: int = 0
    largest_batch: int = 0


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    callback: Callable[[list[Entry]], None]


class Journal:
    """One gateway's journal. Thread-safe: writes go through the writer thread."""

    def __init__(
        self,
        location: Path | str,
        *,
        party: str,
        max_batch: int = 1024,
        backend: Backend | None = None,
    ) -> None:
        """Open the journal at `location`: a SQLite file, or a `postgresql://` URL."""
        self.backend = backend or backend_for(location)
        self.location = self.backend.location
        # the SQLite file (for PostgreSQL, the URL as given: nothing on disk is the journal)
        self.path = Path(location) if isinstance(self.backend, SqliteBackend) else location
        self.party = party
        self.max_batch = max_batch
        self.stats = JournalStats()
        self._open()

    def _open(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._urgent: deque[_Job] = deque()  # also woken through _jobs, with _WAKE
        self._subscribers: list[_Subscriber] = []
        self._rollback_listeners: list[Callable[[], None]] = []
        self._commit_timers: list[Callable[[float, float], None]] = []
        self._sub_lock = threading.Lock()
        self._closed = False
        self._failed = ""  # why writes are refused (the file was deleted or replaced)
        self._write = self.backend.open_writer(self.party)
        try:
            row = self._write.execute(
                "SELECT position, hash FROM entries ORDER BY position DESC LIMIT 1"
            ).fetchone()
        except BaseException:
            self._write.close()
            self.backend.close()
            raise
        self._head_position: int = row[0] if row else 0
        self._head_hash: bytes = bytes(row[1]) if row else GENESIS
        self._committed_head = (self._head_position, self._head_hash)
        self._writer = threading.Thread(target=self._run, name=f"journal-{self.party}", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ writing

    @property
    def head(self) -> tuple[int, bytes]:
        """(entry count, head hash) as of the last commit."""
        return self._committed_head

    def submit(self, operation: Operation[T], *, urgent: bool = False) -> Future[T]:
        """Queue an operation for the next group commit; the future resolves after fsync.
        An `urgent` one cuts the group in progress short (see the module docstring)."""
        if self._failed:
            raise JournalError(self._failed)
        if self._closed:
            raise JournalError("the journal is closed")
        future: Future[T] = Future()
        if urgent:
            self._urgent.append(_Job(operation, future))
            self._jobs.put(_WAKE)
        else:
            self._jobs.put(_Job(operation, future))
        return future

    def submit_async(self, operation: Operation[T], *, urgent: bool = False) -> asyncio.Future[T]:
        """Queue an operation now; an asyncio future (of the running loop) for its result."""
        return asyncio.wrap_future(self.submit(operation, urgent=urgent))

    async def run(self, operation: Operation[T], *, urgent: bool = False) -> T:
        """Run an operation in the next group commit and wait until it is durable."""
        return await asyncio.wrap_future(self.submit(operation, urgent=urgent))

    def run_sync(self, operation: Operation[T]) -> T:
        return self.submit(operation).result()

    def _run(self) -> None:
        carry: list[_Job] = []  # jobs taken but left for the next commit by urgent ones
        stop = False
        while not stop or carry or self._urgent:
            if not stop and not carry and not self._urgent:
                try:
                    first = self._jobs.get(timeout=self.backend.idle_check_s)
                except queue.Empty:
                    self._idle_check()
                    continue
                if first is None:
                    stop = True
                elif first is not _WAKE:
                    carry += _running([first])
            while not stop and len(carry) < self.max_batch:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                elif more is not _WAKE:
                    carry += _running([more])
            if self._failed:
                for job in carry + self._take_urgent():
                    job.future.set_exception(JournalError(self._failed))
                carry = []
                continue
            if carry or self._urgent:
                try:
                    carry = self._commit(carry)
                except BaseException as exc:  # never let the writer die silently
                    log.exception("journal writer failed")
                    for job in carry:
                        if not job.future.done():
                            job.future.set_exception(JournalError(f"journal writer failed: {exc}"))
                    carry = []

    def _idle_check(self) -> None:
        """The writer has been idle: make sure its connection (and so its lock) still holds."""
        if self._failed:
            return
        try:
            self.backend.ping(self._write)
        except Exception as exc:
            self.fail(self.backend.lost(exc) or f"journal {self.location}: {exc}")

    def _take_urgent(self) -> list[_Job]:
        taken = []
        while self._urgent:
            taken.append(self._urgent.popleft())
        return _running(taken)

    def _commit(self, batch: list[_Job]) -> list[_Job]:
        """Run `batch` in one transaction and commit; returns the jobs left for the next
        commit because urgent ones arrived (they are run at once and committed first)."""
        session = self._write
        start_head = (self._head_position, self._head_hash)
        results: list[tuple[_Job, Any, BaseException | None, list[Entry]]] = []
        work = deque(batch)
        ran: list[_Job] = []
        began = time.perf_counter()
        try:
            session.begin()
            while work or self._urgent:
                urgent = self._take_urgent() if self._urgent else []
                if not urgent and not work:
                    break  # the urgent ones were cancelled
                for job in urgent or [work.popleft()]:
                    ran.append(job)
                    results.append(self._apply(session, job))
                if urgent:
                    break  # commit now: the urgent ones wait for nothing else
            applied = time.perf_counter()
            session.commit()
        except BaseException as exc:  # the commit itself failed: nothing of it is durable
            session.rollback()
            lost = self.backend.lost(exc)
            if lost:  # the connection, and with it the lock, is gone: no write may follow
                self.fail(lost)
            self._head_position, self._head_hash = start_head
            self._rolled_back()
            for job in ran:
                if not job.future.done():
                    job.future.set_exception(JournalError(f"journal commit failed: {exc}"))
            return list(work)
        self._committed_head = (self._head_position, self._head_hash)
        done = time.perf_counter()
        for timer in self._commit_timers:
            timer(applied - began, done - applied)
        appended: list[Entry] = []
        self.stats.commits += 1
        self.stats.operations += len(ran)
        self.stats.largest_batch = max(self.stats.largest_batch, len(ran))
        for job, value, error, entries in results:
            appended += entries
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)
        self.stats.entries += len(appended)
        if appended:
            self._publish(appended)
        return list(work)

    def _apply(
        self, session: Session, job: _Job
    ) -> tuple[_Job, Any, BaseException | None, list[Entry]]:
        """Run one job's operation in its own savepoint: its failure undoes only it."""
        txn = Txn(self, session)
        savepoint_head = (self._head_position, self._head_hash)
        session.execute("SAVEPOINT op")
        try:
            value = job.operation(txn)
        except BaseException as exc:
            session.execute("ROLLBACK TO op")
            session.execute("RELEASE op")
            self._head_position, self._head_hash = savepoint_head
            self._rolled_back()
            return (job, None, exc, [])
        session.execute("RELEASE op")
        return (job, value, None, txn.appended)

    def time_commits(self, timer: Callable[[float, float], None]) -> Callable[[], None]:
        """Call `timer(run_s, commit_s)` on the writer thread after each durable commit: the
        seconds its operations took, and the seconds the COMMIT (the fsync) took. It must be
        quick and thread-safe (Prometheus' histograms are). Returns the way to stop."""
        self._commit_timers.append(timer)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._commit_timers.remove(timer)

        return stop

    def on_rollback(self, callback: Callable[[], None]) -> None:
        """Call `callback()` on the writer thread whenever writes are rolled back, so caches
        built by operations (the store's records) can forget what never became durable."""
        self._rollback_listeners.append(callback)

    def _rolled_back(self) -> None:
        for callback in self._rollback_listeners:
            try:
                callback()
            except Exception:
                log.exception("rollback listener failed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._writer.join(timeout=30)
        with contextlib.suppress(Exception):  # a lost connection has nothing left to close
            self._write.close()
        self.backend.close()  # releases the lock

    # ------------------------------------------------------------------ the file itself

    def check_file(self) -> str:
        """Whether the journal is still this gateway's: "" if so, else what happened. For a
        SQLite file, whether its path still names the file opened (deleted? replaced?); for
        PostgreSQL, whether the writer still holds its connection and so its lock. Cheap (no
        I/O on PostgreSQL: the writer checks its connection when idle): call it on a timer,
        never per write."""
        return self.backend.check()

    @property
    def failed(self) -> str:
        return self._failed

    def fail(self, reason: str) -> None:
        """Refuse every write from now on (those already queued fail too): the file this
        journal writes is no longer the journal, so nothing more may be reported durable."""
        self._failed = self._failed or reason

    def announce(
        self, kind: Kind, data: dict[str, Any], event_for: Callable[[Entry], object]
    ) -> Entry:
        """Publish to subscribers an entry that is NOT journaled, with its event: for an alarm
        that cannot be journaled because the journal itself is gone. It takes the position
        after the head, so a watcher's cursor moves past it; the gateway stops right after."""
        position, head = self._committed_head
        body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        entry = Entry(position + 1, kind, time.time_ns(), "", "", 0, body, head, b"")
        entry = replace(entry, event=event_for(entry))
        self._publish([entry])
        return entry

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, callback: Callable[[list[Entry]], None]) -> Callable[[], None]:
        """Call `callback(entries)` on the caller's event loop after each commit."""
        sub = _Subscriber(asyncio.get_running_loop(), callback)
        with self._sub_lock:
            self._subscribers.append(sub)

        def unsubscribe() -> None:
            with self._sub_lock:
                if sub in self._subscribers:
                    self._subscribers.remove(sub)

        return unsubscribe

    def _publish(self, entries: list[Entry]) -> None:
        with self._sub_lock:
            subs = list(self._subscribers)
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                sub.loop.call_soon_threadsafe(sub.callback, entries)

    # ------------------------------------------------------------------ reading

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read of committed state (`?` placeholders); rows by column name or index."""
        return self.backend.query(sql, params)

    def entries(self, after: int = 0, limit: int = 1000) -> list[Entry]:
        rows = self.query(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE position > ? ORDER BY position LIMIT ?",
            (after, limit),
        )
        return [entry_of(r) for r in rows]

    def entry(self, position: int) -> Entry | None:
        rows = self.query(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE position = ?", (position,))
        return entry_of(rows[0]) if rows else None

    def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        """The database's query plan for `sql`, one line per step."""
        return self.backend.explain(sql, params)

    # -- the link's reads: where each direction stands, and the receiving end's archive

    def last_sequence(self, sender_party: str, lane: int) -> int:
        """The highest sequence settled on `sender_party`'s lane `lane` (0: none)."""
        rows = self.query(
            "SELECT MAX(sequence) FROM settlements WHERE sender_party = ? AND lane = ?",
            (sender_party, lane),
        )
        return int(rows[0][0] or 0)

    @staticmethod
    def last_sequence_in(txn: Txn, sender_party: str, lane: int) -> int:
        """`last_sequence` inside a write transaction (sees the batch's own writes)."""
        row = txn.execute(
            "SELECT MAX(sequence) FROM settlements WHERE sender_party = ? AND lane = ?",
            (sender_party, lane),
        ).fetchone()
        return int(row[0] or 0)

    def _archived(self, rows: list[Any], sender_party: str) -> list[link.BatchReceipt]:
        return [
            batch_receipt_from_bytes(
                bytes(r["receipt"]), receiver_party=self.party, sender_party=sender_party
            )
            for r in rows
        ]

    def batch_receipts_after(
        self, sender_party: str, lane: int, sequence: int
    ) -> list[link.BatchReceipt]:
        rows = self.query(
            "SELECT receipt FROM batch_receipts WHERE sender_party = ? AND lane = ?"
            " AND last_sequence > ? ORDER BY first_sequence",
            (sender_party, lane, sequence),
        )
        return self._archived(rows, sender_party)

    def batch_receipt_for(
        self, sender_party: str, lane: int, sequence: int
    ) -> link.BatchReceipt | None:
        rows = self.query(
            "SELECT receipt FROM batch_receipts WHERE sender_party = ? AND lane = ?"
            " AND first_sequence <= ? AND last_sequence >= ? ORDER BY first_sequence DESC"
            " LIMIT 1",
            (sender_party, lane, sequence, sequence),
        )
        found = self._archived(rows, sender_party)
        return found[0] if found else None
