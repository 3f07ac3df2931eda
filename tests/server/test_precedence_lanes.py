"""Precedence lanes in the gateway's submit path and journal writer (no sockets needed).

The end-to-end figure (a FLASH behind a draining ROUTINE backlog) is a benchmark, `hotline
sim bench`; these tests pin down the mechanisms it relies on, deterministically."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from hotline.journal_file import JournalReader, verify_chain
from hotline.v1 import common_pb2, envelope_pb2
from server.journal import Journal, Kind, Txn
from server.service import PrecedenceGate
from tests.conftest import JournalAt


def _envelope(precedence: int) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(precedence=precedence)  # type: ignore[arg-type]


async def test_urgent_submissions_never_wait_for_a_slot() -> None:
    gate = PrecedenceGate(slots=1)
    routine = [_envelope(common_pb2.PRECEDENCE_ROUTINE)]
    mixed = [_envelope(common_pb2.PRECEDENCE_ROUTINE), _envelope(common_pb2.PRECEDENCE_FLASH)]
    assert not gate.urgent(routine)
    assert gate.urgent(mixed)  # a batch holding a FLASH is urgent as a whole
    assert gate.urgent([_envelope(common_pb2.PRECEDENCE_IMMEDIATE)])
    assert not gate.urgent([_envelope(common_pb2.PRECEDENCE_PRIORITY)])

    assert await gate.enter(False)  # the one slot
    second = asyncio.create_task(gate.enter(False))
    await asyncio.sleep(0.01)
    assert not second.done()  # a second ROUTINE waits ...
    assert gate.waiting
    assert not await asyncio.wait_for(gate.enter(True), 1)  # ... a FLASH does not
    gate.leave()
    assert await asyncio.wait_for(second, 1)  # the slot passes on
    gate.leave()
    with pytest.raises(ValueError, match="at least 1"):
        PrecedenceGate(slots=0)


def _append(
    body: bytes, hold: threading.Event | None = None, inside: threading.Event | None = None
) -> Callable[[Txn], int]:
    """An operation appending one entry; with `hold`, it signals `inside` and waits for it."""

    def op(txn: Txn) -> int:
        position = txn.append(Kind.LINK_UP, body).position
        if inside is not None:
            inside.set()
        if hold is not None:
            hold.wait(10)
        return position

    return op


def test_an_urgent_operation_cuts_the_group_commit_in_progress_short(
    journal_at: JournalAt,
) -> None:
    journal = Journal(journal_at("j.db"), party="JP")
    try:
        first_hold, second_hold = threading.Event(), threading.Event()
        in_first, in_slow = threading.Event(), threading.Event()
        first = journal.submit(_append(b'{"n": "first"}', first_hold, in_first))
        assert in_first.wait(10)
        # While the writer is held inside `first`, a group gathers behind it: a slow
        # operation, then two quick ones.
        slow = journal.submit(_append(b'{"n": "slow"}', second_hold, in_slow))
        quick = [journal.submit(_append(b'{"n": %d}' % i)) for i in range(2)]
        first_hold.set()
        assert first.result(10) == 1
        # The writer is now held inside `slow`, with the two quick ones in its group.
        assert in_slow.wait(10)
        urgent = journal.submit(_append(b'{"n": "urgent"}'), urgent=True)
        second_hold.set()
        assert (slow.result(10), urgent.result(10)) == (2, 3)
        # The urgent one went in right after the operation in progress and was committed
        # with it; the rest of the group followed in the next commit, in their order.
        assert [f.result(10) for f in quick] == [4, 5]
        assert journal.stats.commits == 3  # [first], [slow, urgent], [quick, quick]
    finally:
        journal.close()
    with JournalReader(journal_at("j.db")) as reader:
        assert verify_chain(reader.entries()).first_bad is None


def test_cancelled_urgent_operations_are_skipped(journal_at: JournalAt) -> None:
    journal = Journal(journal_at("j.db"), party="JP")
    try:
        hold, inside = threading.Event(), threading.Event()
        first = journal.submit(_append(b'{"n": "first"}', hold, inside))
        assert inside.wait(10)
        dropped = journal.submit(_append(b'{"n": "dropped"}'), urgent=True)
        assert dropped.cancel()
        hold.set()
        after = journal.submit(_append(b'{"n": "after"}'), urgent=True)
        assert (first.result(10), after.result(10)) == (1, 2)
    finally:
        journal.close()
