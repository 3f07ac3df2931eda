"""The journal file: what an entry is, how entries are chained, and a read-only reader.

A gateway's journal is one SQLite file, or one PostgreSQL database (a `postgresql://` URL),
that its gateway alone writes (`server.journal`, which creates the tables and owns
`SCHEMA_VERSION`, and `server.store`). This module is the part of its format that everyone
else relies on:

* `Entry` and `Kind`: one record of the append-only journal, and what it records;
* `entry_hash` and `verify_chain`: the hash chain (`hash = SHA-256(prev_hash || entry)`) that
  makes editing, inserting, deleting or truncating entries detectable;
* `JournalReader`: a journal opened read-only (SQLite `mode=ro`; PostgreSQL in read-only
  transactions), for everyone who reads a journal without being its gateway: `hotline journal verify|export` (`hotline.journal_verify`), the
  simulator's integrity check (`sim.integrity`), tests.

It sits in the protocol package, below `server` and `sim`, because both need it and `sim` may
not import `server` (`sim -> client -> hotline`, `server -> hotline`), as `hotline.transport`
sits below the gateway and the operator client. Besides the gateway's own journal and store
modules, this is the only module that speaks SQL: no reader of a journal file writes any.

The reader reads the chain (`meta`, `entries`) and the link's settlements (`settlements`), the
tables every journal schema has held; the gateway's other tables are its own index, which the
reader returns as raw rows (`index_rows`) only for `hotline journal verify` to recompute them
from the chain and compare.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

GENESIS = b"\x00" * 32  # the prev_hash of entry 1


class Kind(StrEnum):
    """What an entry records. The names are part of the journal format."""

    KEY = "key"  # a signing certificate (DER) this journal's signatures can be checked with
    MESSAGE_OUT = "message-out"  # body: SignedPayload(Envelope) we sent
    MESSAGE_IN = "message-in"  # body: SignedPayload(Envelope) received from the peer
    RECEIPT = "receipt"  # body: SignedPayload(BatchReceiptBody) the peer gave us (one per batch)
    DELIVERED = "delivered"  # body: JSON {receipt: position of the RECEIPT entry}; per message
    REFUSED_BY_PEER = "refused-by-peer"  # body: JSON rejection of our message by the peer
    REFUSED_INBOUND = "refused-inbound"  # body: JSON; we refused a peer delivery (seq consumed)
    ACKNOWLEDGED = "acknowledged"  # body: JSON; our operator acknowledged an inbound message
    ESCALATION = "escalation"  # body: JSON; our outbound message passed its deadline unanswered
    REALERT = "realert"  # body: JSON; an inbound message passed its deadline unacknowledged
    EXPIRED = "expired"  # body: JSON; an unanswered message passed its expire_time (no more
    # escalations or re-alerts for it)
    LINK_UP = "link-up"  # body: JSON {direction, detail}
    LINK_DOWN = "link-down"  # body: JSON {direction, detail}
    SECURITY = "security"  # body: JSON; a refused connection or call
    CHECKPOINT_OWN = "checkpoint-own"  # body: SignedPayload(CheckpointBody) we sent the peer
    CHECKPOINT_PEER = "checkpoint-peer"  # body: SignedPayload(CheckpointBody) from the peer
    REVOCATION = "revocation"  # body: JSON {party, issuer, number}; a revocation list taken
    # into force, so that an older one put back is refused even across a restart


@dataclass(frozen=True)
class Entry:
    position: int
    kind: Kind
    time_ns: int
    message_id: str
    party: str
    sequence: int
    body: bytes
    prev_hash: bytes
    hash: bytes
    # Not part of the journal: what the operation that wrote a live entry made of it (the
    # gateway's operator event), so readers of a commit need not read the journal back.
    event: object = field(default=None, compare=False, repr=False)

    def json_body(self) -> dict[str, Any]:
        value = json.loads(self.body)
        if not isinstance(value, dict):
            raise ValueError(f"entry {self.position}: body is not a JSON object")
        return value


def entry_hash(
    prev_hash: bytes,
    position: int,
    kind: str,
    time_ns: int,
    message_id: str,
    party: str,
    sequence: int,
    body: bytes,
) -> bytes:
    """The chain hash of one entry. Every field is length-prefixed: no two entries collide."""
    h = hashlib.sha256()
    h.update(b"hotline-journal-v1\x00")
    h.update(prev_hash)
    h.update(struct.pack(">QqQ", position, time_ns, sequence))
    for text in (kind, message_id, party):
        raw = text.encode("utf-8")
        h.update(struct.pack(">I", len(raw)))
        h.update(raw)
    h.update(struct.pack(">Q", len(body)))
    h.update(body)
    return h.digest()


class JournalFileError(ValueError):
    """A journal file cannot be read: missing, not a journal, or damaged."""


ENTRY_COLUMNS = "position, kind, time_ns, message_id, party, sequence, body, prev_hash, hash"


def entry_of(row: Any) -> Entry:
    """An `Entry` from a row of ENTRY_COLUMNS (a tuple or an `sqlite3.Row`)."""
    position, kind, time_ns, message_id, party, sequence, body, prev_hash, digest = row
    try:
        known = Kind(kind)
    except ValueError:
        raise JournalFileError(f"entry {position}: unknown kind {kind!r}") from None
    return Entry(
        position=position,
        kind=known,
        time_ns=time_ns,
        message_id=message_id,
        party=party,
        sequence=sequence,
        body=bytes(body),
        prev_hash=bytes(prev_hash),
        hash=bytes(digest),
    )


# ---------------------------------------------------------------------- where a journal is

JournalLocation = Path | str  # a SQLite file, or a postgresql:// URL (kept as a string)


def is_database_url(location: object) -> bool:
    """Whether a journal location names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def journal_location(text: str) -> JournalLocation:
    """A journal named on a command line: a `postgresql://` URL as given, else a file path."""
    return text if is_database_url(text) else Path(text)


def redact(url: str) -> str:
    """A database URL fit for a log line or an error: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """The journal's SQL (`?` placeholders, as SQLite takes it) for psycopg (`%s`). The
    journal's statements hold no `%` and no `?` inside a literal."""
    return sql.replace("?", "%s")


class Row(tuple[Any, ...]):
    """A PostgreSQL row that answers by column name and by index, as `sqlite3.Row` does."""

    names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row.names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self.names[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self.names)


def row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    """psycopg's row factory for `Row`s."""
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


# ---------------------------------------------------------------------- reading a journal file


@dataclass(frozen=True)
class Settlement:
    """The link's settlement of one sequence of `sender_party`'s lane `lane` (a precedence), as a
    journal holds it."""

    sender_party: str
    sequence: int
    message_id: str
    outcome: str  # "receipt", or the RejectReason name of a rejection
    lane: int = 4


class _PgReadConnection:
    """A PostgreSQL journal read the way `JournalReader` reads a SQLite file."""

    def __init__(self, url: str, timeout: float) -> None:
        import psycopg  # only readers of a PostgreSQL journal need the driver

        self.error: type[Exception] = psycopg.Error
        self._conn = psycopg.connect(
            url,
            autocommit=True,
            row_factory=row_factory,
            connect_timeout=max(1, int(timeout)),
            options="-c default_transaction_read_only=on",
            application_name="hotline-journal-reader",
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(pg_sql(sql), tuple(params))

    def close(self) -> None:
        self._conn.close()


class JournalReader:
    """One journal, opened read-only: a SQLite file or a `postgresql://` URL. Safe beside the
    gateway that writes it (each call reads one committed state of the journal; calls made one
    after the other may see later commits). Use as a context manager, or `close()` it."""

    def __init__(self, path: JournalLocation, *, timeout: float = 10.0) -> None:
        self._conn: Any
        if is_database_url(path):
            self.path: JournalLocation = redact(str(path))
            try:
                self._conn = _PgReadConnection(str(path), timeout)
            except Exception as exc:
                raise JournalFileError(f"cannot open journal {self.path}: {exc}") from exc
            self._errors: tuple[type[Exception], ...] = (self._conn.error,)
            return
        self.path = Path(path)
        self._errors = (sqlite3.Error,)
        if not self.path.exists():
            raise JournalFileError(f"journal {self.path} does not exist")
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=timeout)
        except sqlite3.Error as exc:
            raise JournalFileError(f"cannot open journal {self.path}: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> Iterator[Any]:
        try:
            yield from self._conn.execute(sql, tuple(params))
        except self._errors as exc:
            raise JournalFileError(f"cannot read journal {self.path}: {exc}") from exc

    def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return next(self._rows(sql, params), None)

    def party(self) -> str:
        """Whose journal this is (raises JournalFileError for a file that is not a journal)."""
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'party'").fetchone()
        except self._errors as exc:
            raise JournalFileError(f"{self.path} is not a Hotline journal ({exc})") from exc
        if row is None:
            raise JournalFileError(f"{self.path} is not a Hotline journal")
        return str(row[0])

    def head_position(self) -> int:
        """The last entry's position (0 for an empty journal)."""
        row = self._one("SELECT MAX(position) FROM entries")
        return int(row[0] or 0)

    def entries(self, kinds: Iterable[Kind] | None = None, *, after: int = 0) -> Iterator[Entry]:
        """Entries after position `after`, in position order; only `kinds` if given."""
        sql = f"SELECT {ENTRY_COLUMNS} FROM entries WHERE position > ?"
        params: list[Any] = [after]
        if kinds is not None:
            wanted = sorted({Kind(k).value for k in kinds})
            sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
            params += wanted
        for row in self._rows(sql + " ORDER BY position", params):
            yield entry_of(row)

    def entry(self, position: int) -> Entry | None:
        row = self._one(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE position = ?", (position,))
        return None if row is None else entry_of(row)

    def hashes(self) -> dict[int, bytes]:
        """Every entry's chain hash by position: the heads a checkpoint can be compared with."""
        return {
            position: bytes(digest)
            for position, digest in self._rows("SELECT position, hash FROM entries")
        }

    def settlements(self, sender_party: str | None = None) -> list[Settlement]:
        """The link's settlements (of `sender_party`'s sequences only, if given), by lane and
        sequence."""
        sql = "SELECT sender_party, sequence, message_id, outcome, lane FROM settlements"
        params: tuple[Any, ...] = ()
        if sender_party is not None:
            sql += " WHERE sender_party = ?"
            params = (sender_party,)
        return [
            Settlement(str(p), int(s), str(m), str(o), int(lane))
            for p, s, m, o, lane in self._rows(
                sql + " ORDER BY sender_party, lane, sequence", params
            )
        ]

    def index_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one of the gateway's index tables (`messages`, `settlements`,
        `batch_receipts`), as column -> value: what `journal verify` compares with the chain."""
        if table not in INDEX_TABLES:
            raise ValueError(f"not an index table: {table}")
        try:
            cursor = self._conn.execute(f"SELECT * FROM {table}")  # a fixed name, checked above
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except self._errors as exc:
            raise JournalFileError(f"cannot read journal {self.path}: {exc}") from exc


INDEX_TABLES = ("messages", "settlements", "batch_receipts")

# ---------------------------------------------------------------------- the chain


@dataclass
class ChainReport:
    entries: int = 0
    head_hash: bytes = GENESIS
    first_bad: int | None = None
    problem: str = ""
    kinds: dict[str, int] = field(default_factory=dict)


def verify_chain(entries: Iterable[Entry]) -> ChainReport:
    """Recompute the hash chain; report the first entry that does not fit."""
    report = ChainReport()
    prev = GENESIS
    expected_position = 1
    for e in entries:
        report.kinds[e.kind.value] = report.kinds.get(e.kind.value, 0) + 1
        if e.position != expected_position:
            report.first_bad = expected_position
            report.problem = f"entry {expected_position} is missing (next is {e.position})"
            return report
        if e.prev_hash != prev:
            report.first_bad = e.position
            report.problem = f"entry {e.position} does not link to entry {e.position - 1}"
            return report
        computed = entry_hash(
            prev, e.position, e.kind.value, e.time_ns, e.message_id, e.party, e.sequence, e.body
        )
        if computed != e.hash:
            report.first_bad = e.position
            report.problem = f"entry {e.position} was altered (its hash does not match)"
            return report
        prev = e.hash
        report.entries = e.position
        expected_position += 1
    report.head_hash = prev
    return report
