"""The overdue check costs O(due), not O(journal): it reads a partial index of the messages
that may still come due, and escalates each of them once. (How long a check takes at 10k and
100k messages is measured by `python -m tests.bench.overdue`, not asserted here.)"""

from __future__ import annotations

import time
from pathlib import Path

from server.journal import Kind
from tests.bench.overdue import DUE, build


async def test_the_checks_that_run_all_the_time_read_an_index_not_the_journal(
    tmp_path: Path,
) -> None:
    store, _ = await build(tmp_path / "jp.db", 400)
    try:
        plans = store.query_plans()
    finally:
        store.journal.close()
    for name, plan in plans.items():
        assert plan, name
        for step in plan:
            assert "INDEX" in step, f"{name} scans the table: {plan}"
            assert "TEMP B-TREE" not in step, f"{name} sorts: {plan}"
    assert "USING INDEX messages_due (deadline_ns>? AND deadline_ns<?)" in plans["mark_overdue"][0]
    assert "messages_overdue" in plans["overdue_count"][0]
    assert "messages_state" in plans["queue_depth"][0]


async def test_only_unanswered_messages_come_due_and_each_only_once(tmp_path: Path) -> None:
    """Every message in the journal is past its deadline; all but DUE were answered (or refused
    by the peer, or are acknowledgements themselves): only those DUE are escalated, once."""
    store, count = await build(tmp_path / "jp.db", 400)
    try:
        assert count > 10 * DUE
        first = await store.mark_overdue(time.time_ns())
        assert len(first) == DUE
        assert {e.kind for e in first} == {Kind.ESCALATION}
        assert await store.mark_overdue(time.time_ns() + 10**12) == []
        assert store.overdue_count() == DUE
        assert store.queue_depth() == DUE  # the unanswered ones were never delivered either
        escalated = store.record(first[0].message_id)
        assert escalated is not None
        assert escalated.overdue
    finally:
        store.journal.close()
