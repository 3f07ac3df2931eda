"""The journal on both backends, a real SQLite file and a real PostgreSQL database (each test
runs on both: `journal_at` in tests/conftest.py): chain, group commit, isolation of failures,
tamper evidence, the reader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import server.journal
from hotline.journal_file import ChainReport, JournalFileError, JournalReader, verify_chain
from server.journal import Journal, JournalError, JournalInUse, Kind, Txn
from tests import pg
from tests.conftest import JournalAt


def chain_of(path: Path | str) -> ChainReport:
    with JournalReader(path) as journal:
        return verify_chain(journal.entries())


def _append(kind: Kind, body: bytes, message_id: str = "") -> Callable[[Txn], int]:
    def op(txn: Txn) -> int:
        return txn.append(kind, body, message_id=message_id).position

    return op


async def test_concurrent_appends_share_commits_and_form_an_unbroken_chain(
    journal_at: JournalAt,
) -> None:
    journal = Journal(journal_at("j.db"), party="JP")
    try:
        positions = await asyncio.gather(
            *(journal.run(_append(Kind.LINK_UP, b'{"n": %d}' % i)) for i in range(500))
        )
        assert sorted(positions) == list(range(1, 501))
        assert journal.stats.commits < 500  # group commit happened
        assert journal.head[0] == 500
    finally:
        journal.close()
    report = chain_of(journal_at("j.db"))
    assert report.first_bad is None
    assert report.entries == 500


async def test_a_failing_operation_is_undone_alone_and_the_rest_of_its_batch_commits(
    journal_at: JournalAt,
) -> None:
    journal = Journal(journal_at("j.db"), party="JP")

    def bad(txn: Txn) -> None:
        txn.append(Kind.LINK_UP, b"{}")
        raise ValueError("refused by the operation")

    try:
        results = await asyncio.gather(
            journal.run(_append(Kind.LINK_UP, b"{}")),
            journal.run(bad),
            journal.run(_append(Kind.LINK_DOWN, b"{}")),
            return_exceptions=True,
        )
        assert isinstance(results[1], ValueError)
        assert [e.kind for e in journal.entries()] == [Kind.LINK_UP, Kind.LINK_DOWN]
    finally:
        journal.close()
    assert chain_of(journal_at("j.db")).first_bad is None


def test_an_entry_edited_by_hand_is_found_by_verification(
    journal_at: JournalAt, tamper: Callable[..., None]
) -> None:
    journal = Journal(journal_at("j.db"), party="JP")
    for i in range(10):
        journal.run_sync(_append(Kind.LINK_UP, b'{"n": %d}' % i))
    journal.close()
    tamper(journal_at("j.db"), "UPDATE entries SET body = ? WHERE position = 7", (b'{"n": 99}',))
    report = chain_of(journal_at("j.db"))
    assert report.first_bad == 7
    assert "altered" in report.problem


def test_a_deleted_entry_is_found_by_verification(
    journal_at: JournalAt, tamper: Callable[..., None]
) -> None:
    journal = Journal(journal_at("j.db"), party="JP")
    for _ in range(5):
        journal.run_sync(_append(Kind.LINK_UP, b"{}"))
    journal.close()
    tamper(journal_at("j.db"), "DELETE FROM entries WHERE position = 3")
    report = chain_of(journal_at("j.db"))
    assert report.first_bad == 3
    assert "missing" in report.problem


def test_reopening_continues_the_chain_and_refuses_another_partys_journal(
    journal_at: JournalAt,
) -> None:
    journal = Journal(journal_at("j.db"), party="JP")
    journal.run_sync(_append(Kind.LINK_UP, b"{}"))
    journal.close()
    again = Journal(journal_at("j.db"), party="JP")
    assert again.run_sync(_append(Kind.LINK_DOWN, b"{}")) == 2
    again.close()
    assert chain_of(journal_at("j.db")).entries == 2
    with pytest.raises(JournalError, match="party JP's journal"):
        Journal(journal_at("j.db"), party="TW")


def test_witnessed_checkpoints_compare_correctly_on_a_live_journal(
    journal_at: JournalAt, tamper: Callable[..., None]
) -> None:
    """A checkpoint witnessed after our report was taken is compared with our chain as it is
    now (the witness is read first, then our chain), not flagged as a truncation."""
    from hotline.journal_verify import check_witnessed, verify_journal
    from hotline.v1 import common_pb2, peer_link_pb2

    jp = Journal(journal_at("jp.db"), party="JP")
    for _ in range(3):
        jp.run_sync(_append(Kind.LINK_UP, b"{}"))
    report = verify_journal(journal_at("jp.db"), [])  # taken now: 3 entries
    for _ in range(2):  # JP goes on committing ...
        jp.run_sync(_append(Kind.LINK_UP, b"{}"))
    count, head = jp.head
    jp.close()
    # ... and TW witnesses the newer head before our check reads it
    body = peer_link_pb2.CheckpointBody(party="JP", entry_count=count, head_hash=head)
    signed = common_pb2.SignedPayload(payload=body.SerializeToString())
    tw = Journal(journal_at("tw.db"), party="TW")

    def witness(txn: Txn) -> None:
        txn.append(Kind.CHECKPOINT_PEER, signed.SerializeToString(), party="JP")

    tw.run_sync(witness)
    tw.close()
    assert report.entries == 3
    assert check_witnessed(report, journal_at("tw.db")).ok
    assert report.checkpoints_matched == 1
    # a journal that really lost entries is still caught
    tamper(journal_at("jp.db"), "DELETE FROM entries WHERE position = 5")
    truncated = check_witnessed(verify_journal(journal_at("jp.db"), []), journal_at("tw.db"))
    assert not truncated.ok
    assert "truncated" in truncated.problem


def test_the_reader_sees_what_the_gateway_journaled_and_refuses_what_is_not_a_journal(
    journal_at: JournalAt, backend: str, tmp_path: Path
) -> None:
    journal = Journal(journal_at("j.db"), party="JP")

    def op(txn: Txn) -> None:
        txn.append(Kind.MESSAGE_OUT, b"out", message_id="m1", party="JP")
        txn.append(Kind.LINK_UP, b"{}")
        txn.append(Kind.MESSAGE_IN, b"in", message_id="m2", party="TW", sequence=1)

    journal.run_sync(op)
    count, head = journal.head
    journal.close()
    with JournalReader(journal_at("j.db")) as reader:
        assert reader.party() == "JP"
        assert reader.head_position() == count == 3
        assert [e.message_id for e in reader.entries()] == ["m1", "", "m2"]
        assert [e.position for e in reader.entries([Kind.MESSAGE_IN, Kind.MESSAGE_OUT])] == [1, 3]
        assert [e.kind for e in reader.entries(after=2)] == [Kind.MESSAGE_IN]
        entry = reader.entry(3)
        assert entry is not None
        assert (entry.party, entry.sequence, entry.body) == ("TW", 1, b"in")
        assert reader.entry(4) is None
        assert reader.hashes()[3] == head
        assert reader.settlements() == []  # none: the store writes them (tests/security reads)
    if backend == "sqlite":
        with pytest.raises(JournalFileError, match="does not exist"):
            JournalReader(tmp_path / "nothing.db")
        (tmp_path / "notes.txt").write_text("not a database at all " * 100)
        not_a_journal: Path | str = tmp_path / "notes.txt"
    else:
        unreachable = str(journal_at("j.db")).replace("host=/", "host=/nonexistent/")
        with pytest.raises(JournalFileError, match="cannot open journal"):
            JournalReader(unreachable)
        not_a_journal = journal_at("empty.db")  # a database, with no journal in it
    with (
        pytest.raises(JournalFileError, match="not a Hotline journal"),
        JournalReader(not_a_journal) as reader,
    ):
        reader.party()


def test_a_journal_file_is_locked_by_its_owner_and_knows_when_it_is_replaced(
    tmp_path: Path,
) -> None:
    import os

    from server.journal import JournalInUse

    journal = Journal(tmp_path / "j.db", party="JP")
    try:
        with pytest.raises(JournalInUse, match=f"is in use by pid {os.getpid()}"):
            Journal(tmp_path / "j.db", party="JP")
        assert journal.check_file() == ""
        (tmp_path / "other.db").write_bytes(b"")
        os.replace(tmp_path / "other.db", tmp_path / "j.db")
        assert "was replaced by another file" in journal.check_file()
        journal.fail("the file was replaced")
        with pytest.raises(JournalError, match="the file was replaced"):
            journal.run_sync(_append(Kind.LINK_UP, b"{}"))
    finally:
        journal.close()
    (tmp_path / "j.db").unlink()
    again = Journal(tmp_path / "j.db", party="JP")  # the lock went with the first owner
    again.close()


def test_a_database_journal_is_locked_by_its_owner_and_stops_when_its_connection_is_lost(
    postgres: pg.PostgresServer,
) -> None:
    """On PostgreSQL the writer's own connection holds the journal's advisory lock: a second
    writer is refused while it lives; once it is lost (the database ended it), the journal
    refuses every write and says why, and another writer may take the lock."""
    url = postgres.new_database()
    journal = Journal(url, party="JP")
    try:
        journal.run_sync(_append(Kind.LINK_UP, b"{}"))
        with pytest.raises(JournalInUse, match="in use by another gateway"):
            Journal(url, party="JP")
        assert journal.check_file() == ""
        postgres.execute(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'hotline-gateway' AND datname = current_database()",
        )
        for _ in range(100):  # the writer checks its connection after 1 s idle
            if journal.check_file():
                break
            time.sleep(0.1)
        assert "lost the connection to the database" in journal.check_file()
        with pytest.raises(JournalError, match="lost the connection"):
            journal.run_sync(_append(Kind.LINK_UP, b"{}"))
        successor = Journal(url, party="JP")  # the lock went with the lost connection
        assert successor.run_sync(_append(Kind.LINK_DOWN, b"{}")) == 2
        successor.close()
    finally:
        journal.close()
    assert chain_of(url).entries == 2


@pytest.mark.parametrize("found", ["99", "2"])
def test_a_schema_newer_than_the_code_or_one_it_cannot_migrate_is_refused(
    journal_at: JournalAt, tamper: Callable[..., None], found: str
) -> None:
    Journal(journal_at("j.db"), party="JP").close()
    tamper(journal_at("j.db"), "UPDATE meta SET value = ? WHERE key = 'schema_version'", (found,))
    expected = "newer than this gateway's" if found == "99" else "cannot migrate"
    with pytest.raises(JournalError, match=f"journal schema {found}, .*{expected}"):
        Journal(journal_at("j.db"), party="JP")


def test_an_older_schema_is_migrated_at_start_in_one_transaction(
    journal_at: JournalAt, tamper: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(journal_at("j.db"), party="JP")
    journal.run_sync(_append(Kind.LINK_UP, b"{}"))
    journal.close()
    tamper(journal_at("j.db"), "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    # a failing step leaves the journal as it was: still version 1, nothing half-done
    monkeypatch.setattr(
        server.journal,
        "MIGRATIONS",
        {
            1: ("CREATE TABLE migrated (n INTEGER)",),
            2: ("SELECT no_such_column FROM meta",),
            3: (),
        },
    )
    with pytest.raises(Exception, match="no_such_column"):
        Journal(journal_at("j.db"), party="JP")
    with JournalReader(journal_at("j.db")) as reader:
        assert reader.party() == "JP"
    monkeypatch.setattr(
        server.journal,
        "MIGRATIONS",
        {
            1: ("CREATE TABLE migrated (n INTEGER)",),
            2: ("INSERT INTO migrated VALUES (2)",),
            3: ("INSERT INTO migrated VALUES (3)",),
        },
    )
    again = Journal(journal_at("j.db"), party="JP")
    try:
        assert again.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "4"
        assert [r[0] for r in again.query("SELECT n FROM migrated")] == [2, 3]
        assert again.run_sync(_append(Kind.LINK_DOWN, b"{}")) == 2
    finally:
        again.close()
