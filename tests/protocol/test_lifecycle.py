"""The rules of a message's life (`hotline.lifecycle`), as plain functions: every rule, what
each leaves in the index, and expiry."""

from __future__ import annotations

import pytest

from hotline import lifecycle
from hotline.lifecycle import Rule, Standing
from hotline.v1 import common_pb2, envelope_pb2
from tests.harness import free_text

NEW, UPDATE, CANCEL = common_pb2.ACTION_NEW, common_pb2.ACTION_UPDATE, common_pb2.ACTION_CANCEL
REF = "01977609-2400-71e7-8f65-4e6cf6e2d6cd"


def envelope(action: int, body: str = "free_text") -> envelope_pb2.Envelope:
    env = free_text("x")
    env.sender_party = "JP"
    env.action = action  # type: ignore[assignment]
    env.references[:] = [REF]
    if body == "sar_request":
        env.sar_request.SetInParent()
    elif body == "maritime_encounter":
        env.maritime_encounter.SetInParent()
    return env


HELD = Standing("JP", "sar_request")


@pytest.mark.parametrize(
    ("action", "body", "held", "rule"),
    [
        (UPDATE, "sar_request", None, Rule.UNKNOWN_REFERENCE),
        (UPDATE, "sar_request", Standing("TW", "sar_request"), Rule.OTHER_PARTY),
        (
            UPDATE,
            "sar_request",
            Standing("JP", "sar_request", rejected=True),
            Rule.REFERENCE_REJECTED,
        ),
        (CANCEL, "free_text", Standing("JP", "acknowledgement"), Rule.ACKNOWLEDGEMENT),
        (UPDATE, "free_text", Standing("JP", "free_text", CANCEL, REF), Rule.CANCELLATION_FINAL),
        (
            UPDATE,
            "sar_request",
            Standing("JP", "sar_request", cancelled_by="c"),
            Rule.UPDATE_AFTER_CANCEL,
        ),
        (CANCEL, "free_text", Standing("JP", "sar_request", cancelled_by="c"), Rule.CANCEL_ONCE),
        (UPDATE, "free_text", HELD, Rule.UPDATE_BODY_TYPE),
        (CANCEL, "maritime_encounter", HELD, Rule.CANCEL_BODY_TYPE),
    ],
)
def test_each_rule_is_named_when_broken(
    action: int, body: str, held: Standing | None, rule: Rule
) -> None:
    broken = lifecycle.breach(envelope(action, body), held)
    assert broken is not None
    assert broken.rule is rule
    assert broken.detail.startswith("references[0]: ")
    verb = "UPDATE" if action == UPDATE else "CANCEL"
    assert broken.detail.endswith(f"({verb} rule {rule.value})")


@pytest.mark.parametrize(
    ("action", "body", "held"),
    [
        (UPDATE, "sar_request", HELD),  # same body type
        (UPDATE, "sar_request", Standing("JP", "sar_request", updated_by="u")),  # updated again
        (CANCEL, "sar_request", HELD),  # restating the content withdrawn
        (CANCEL, "free_text", HELD),  # or giving the reason
        (NEW, "free_text", None),  # a NEW message's references are a thread, not a chain
    ],
)
def test_what_the_rules_allow(action: int, body: str, held: Standing | None) -> None:
    assert lifecycle.breach(envelope(action, body), held) is None


def test_a_cancelled_message_refuses_an_update_before_its_body_type_is_even_looked_at() -> None:
    cancelled = Standing("JP", "sar_request", cancelled_by="c")
    broken = lifecycle.breach(envelope(UPDATE, "free_text"), cancelled)
    assert broken is not None
    assert broken.rule is Rule.UPDATE_AFTER_CANCEL


def test_the_index_follows_the_chain_and_forgets_what_the_recipient_refused() -> None:
    update, cancel = envelope(UPDATE, "sar_request"), envelope(CANCEL, "free_text")
    own = lifecycle.standing_of(update)
    assert (own.party, own.body, own.action, own.reference) == ("JP", "sar_request", UPDATE, REF)
    updated = lifecycle.after(update, HELD)
    assert updated.updated_by == update.message_id
    cancelled = lifecycle.after(cancel, updated)
    assert cancelled.cancelled_by == cancel.message_id
    assert lifecycle.unchained(cancelled, cancel.message_id) == updated
    assert lifecycle.unchained(updated, update.message_id) == HELD
    assert lifecycle.unchained(updated, "someone-else") == updated
    assert lifecycle.chained(HELD, "n", NEW) == HELD


def test_reference_of_is_only_for_update_and_cancel() -> None:
    assert lifecycle.reference_of(envelope(UPDATE)) == REF
    assert lifecycle.reference_of(envelope(NEW)) == ""
    bare = envelope(CANCEL)
    bare.ClearField("references")
    assert lifecycle.reference_of(bare) == ""
    assert lifecycle.breach(bare, None) is None  # the validator reports the missing reference


def test_body_names_follow_the_body_type_numbers() -> None:
    assert lifecycle.body_name(1) == "maritime_encounter"
    assert lifecycle.body_name(envelope_pb2.BODY_TYPE_ACKNOWLEDGEMENT) == "acknowledgement"
    assert lifecycle.body_name(0) == ""
    assert lifecycle.body_name(99) == ""


def test_expiry() -> None:
    env = free_text("x")
    assert lifecycle.expire_ns(env) == 0
    assert not lifecycle.is_expired(0, 10**19)  # unset: never
    assert lifecycle.expiry_problem(env, 10**19) == ""
    env.expire_time.FromNanoseconds(5 * 10**9)
    assert lifecycle.expire_ns(env) == 5 * 10**9
    assert not lifecycle.is_expired(5 * 10**9, 5 * 10**9 - 1)
    assert lifecycle.is_expired(5 * 10**9, 5 * 10**9)  # stale from expire_time on
    assert lifecycle.expiry_problem(env, 4 * 10**9) == ""
    problem = lifecycle.expiry_problem(env, 7 * 10**9)
    assert problem.startswith("envelope.expire_time: already past (2.000 s ago")
