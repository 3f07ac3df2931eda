"""The checkpoint witness's rules (sans-IO): what it accepts from an honest journal, what it
refuses from a peer that forks, rolls back, or speaks for another party's journal.

Hypothesis plays an honest journal that only grows (its head after N entries never changes)
and a dishonest peer that mixes forged checkpoints into the stream; a reference model of the
rule must agree with the witness on every decision.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.checkpoints import (
    CheckpointAccepted,
    CheckpointProblem,
    CheckpointRefused,
    CheckpointWitness,
)


def head(count: int, history: str = "honest") -> bytes:
    """The head hash of a journal of `count` entries, for one history of that journal."""
    return hashlib.sha256(f"{history}:{count}".encode()).digest()


def refused(decision: object, problem: CheckpointProblem) -> CheckpointRefused:
    assert isinstance(decision, CheckpointRefused), decision
    assert decision.problem is problem, decision
    return decision


def test_the_first_checkpoint_is_accepted_and_witnessed() -> None:
    witness = CheckpointWitness("JP")
    assert len(witness) == 0
    decision = witness.observe("JP", 12, head(12))
    assert decision == CheckpointAccepted("JP", 12, head(12))
    assert witness.largest_entry_count == 12
    assert witness.head_at(12) == head(12)


def test_a_growing_journal_is_accepted() -> None:
    witness = CheckpointWitness("JP")
    for count in (1, 5, 6, 120, 121):
        assert isinstance(witness.observe("JP", count, head(count)), CheckpointAccepted)
    assert witness.largest_entry_count == 121
    assert len(witness) == 5


def test_an_identical_repeat_of_the_latest_is_accepted_as_a_repeat() -> None:
    witness = CheckpointWitness("JP")
    witness.observe("JP", 7, head(7))
    decision = witness.observe("JP", 7, head(7))
    assert decision == CheckpointAccepted("JP", 7, head(7), repeat=True)
    assert len(witness) == 1


@pytest.mark.must("CHK-1")
def test_another_head_for_a_witnessed_count_is_a_fork() -> None:
    witness = CheckpointWitness("TW")
    witness.observe("TW", 120, bytes.fromhex("cd34") + bytes(30))
    decision = refused(
        witness.observe("TW", 120, bytes.fromhex("ab12") + bytes(30)), CheckpointProblem.FORK
    )
    assert decision.detail.startswith("checkpoint fork: TW says entry 120 has head ab12")
    assert "but witnessed cd34" in decision.detail
    assert decision.witnessed_head_hash == bytes.fromhex("cd34") + bytes(30)
    assert witness.head_at(120) == bytes.fromhex("cd34") + bytes(30)  # unchanged


def test_a_fork_below_the_latest_is_named_a_fork() -> None:
    witness = CheckpointWitness("JP")
    witness.observe("JP", 10, head(10))
    witness.observe("JP", 20, head(20))
    decision = refused(witness.observe("JP", 10, head(10, "rewritten")), CheckpointProblem.FORK)
    assert "20 entries were witnessed since" in decision.detail


@pytest.mark.must("CHK-1")
def test_a_smaller_count_is_stale() -> None:
    witness = CheckpointWitness("JP")
    witness.observe("JP", 50, head(50))
    decision = refused(witness.observe("JP", 49, head(49)), CheckpointProblem.STALE)
    assert "has 49 entries" in decision.detail
    assert "50 were witnessed before" in decision.detail
    assert decision.largest_entry_count == 50
    assert witness.largest_entry_count == 50


def test_an_old_checkpoint_sent_again_is_stale() -> None:
    """A journal restored from a backup sends exactly a checkpoint witnessed earlier."""
    witness = CheckpointWitness("JP")
    witness.observe("JP", 10, head(10))
    witness.observe("JP", 20, head(20))
    refused(witness.observe("JP", 10, head(10)), CheckpointProblem.STALE)


@pytest.mark.must("CHK-1")
def test_a_checkpoint_of_another_party_is_refused() -> None:
    witness = CheckpointWitness("JP")
    decision = refused(witness.observe("TW", 3, head(3)), CheckpointProblem.WRONG_PARTY)
    assert decision.detail == (
        "checkpoint for the wrong party: the JP gateway sent a checkpoint of party 'TW''s journal"
    )
    assert witness.largest_entry_count is None


def test_peer_text_in_a_detail_is_quoted_and_cut() -> None:
    witness = CheckpointWitness("JP")
    decision = refused(witness.observe("X\n" * 40, 3, head(3)), CheckpointProblem.WRONG_PARTY)
    assert "\n" not in decision.detail
    assert len(decision.detail) < 120


@pytest.mark.must("CHK-1")
def test_a_head_that_is_not_a_sha256_digest_is_malformed() -> None:
    witness = CheckpointWitness("JP")
    refused(witness.observe("JP", 3, b"short"), CheckpointProblem.MALFORMED)


def test_history_keeps_the_latest_checkpoints_only() -> None:
    witness = CheckpointWitness("JP", history=3)
    for count in range(1, 11):
        witness.observe("JP", count, head(count))
    assert len(witness) == 3
    assert witness.head_at(1) is None
    assert witness.head_at(10) == head(10)
    # a forged count that was forgotten is still refused, as stale
    refused(witness.observe("JP", 2, head(2, "rewritten")), CheckpointProblem.STALE)
    with pytest.raises(ValueError, match="at least the latest"):
        CheckpointWitness("JP", history=0)


# ----------------------------------------------------------------------------- properties

# One step of the peer: an honest checkpoint of its journal after growing by `grow` entries,
# or a forged one: another history of some length, or another party's journal.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("honest"), st.integers(0, 5)),
        st.tuples(st.just("forged"), st.integers(0, 40)),
        st.tuples(st.just("other-party"), st.integers(0, 40)),
    ),
    max_size=60,
)


@given(steps)
def test_an_honest_growing_journal_is_never_refused(plan: list[tuple[str, int]]) -> None:
    witness = CheckpointWitness("JP")
    count = 0
    for _, grow in plan:
        count += grow
        seen = witness.head_at(count) is not None
        decision = witness.observe("JP", count, head(count))
        assert isinstance(decision, CheckpointAccepted)
        assert decision.repeat == seen


@given(steps, st.integers(1, 8))
def test_the_witness_agrees_with_the_rule_and_never_holds_two_heads(
    plan: list[tuple[str, int]], history: int
) -> None:
    witness = CheckpointWitness("JP", history=history)
    model: dict[int, bytes] = {}  # every checkpoint the model accepted
    count = 0
    for kind, n in plan:
        party = "JP"
        if kind == "honest":
            count += n
            statement = (count, head(count))
        elif kind == "forged":
            statement = (n, head(n, "forged"))
        else:
            party, statement = "KR", (n, head(n))
        before = witness.largest_entry_count
        decision = witness.observe(party, *statement)
        largest = max(model, default=None)
        if party != "JP":
            expected: object = CheckpointProblem.WRONG_PARTY
        elif statement[0] in list(model)[-history:] and model[statement[0]] != statement[1]:
            expected = CheckpointProblem.FORK  # named a fork while it is still remembered
        elif largest is not None and statement[0] < largest:
            expected = CheckpointProblem.STALE
        else:
            expected = "accepted"
        if expected == "accepted":
            assert isinstance(decision, CheckpointAccepted), decision
            model.setdefault(statement[0], statement[1])
        else:
            assert isinstance(decision, CheckpointRefused), decision
            assert decision.problem is expected, decision
            assert witness.largest_entry_count == before  # a refusal changes nothing
        assert len(witness) <= history
        # the largest witnessed never decreases, and a count has one head only
        assert witness.largest_entry_count == max(model, default=None)
        for c, h in model.items():
            assert witness.head_at(c) in (None, h)
