"""The rules of a message's life, as plain functions: UPDATE, CANCEL and expiry.

A message can be replaced (`ACTION_UPDATE`) or withdrawn (`ACTION_CANCEL`) by a later message
of the same sender whose `references[0]` names it (see `hotline.v1.Action` and
`Envelope.references`). Both ends apply the same rules: the sending gateway at
`OperatorService.Send` (NOT_FOUND for an unknown reference, FAILED_PRECONDITION for the rest),
the receiving gateway to each delivery (REJECTION_REASON_INVALID_MESSAGE, check 7 of
"Processing a delivery" in peer_link.proto). `breach` is that one check; `Standing` is what a
gateway's in-memory index holds of each message id so that the check needs no journal read.

Expiry: `expire_time` marks when the content goes stale. `Send` refuses an envelope already
past it (`expiry_problem`); a message that is or becomes past it is still delivered, journaled
and shown, marked expired, and is no longer escalated or re-alerted (`is_expired`).

No I/O here: the callers pass the envelope, what their index holds and the time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from hotline.v1 import common_pb2, envelope_pb2

UPDATE = common_pb2.ACTION_UPDATE
CANCEL = common_pb2.ACTION_CANCEL
FREE_TEXT = "free_text"
ACKNOWLEDGEMENT = "acknowledgement"

# `BodyType` values are the `Envelope.body` members in declaration order, from 1.
BODY_NAMES: tuple[str, ...] = tuple(
    field.name for field in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields
)


def body_name(body_type: int) -> str:
    """The `Envelope.body` member of a `BodyType` value ("" for an unknown one)."""
    return BODY_NAMES[body_type - 1] if 1 <= body_type <= len(BODY_NAMES) else ""


@dataclass(frozen=True)
class Standing:
    """Where one message stands in its chain: what the rules need to know of it.

    `party` sent it; `body` is its `Envelope.body` member; `action` its `Action` and
    `reference` what it updates or cancels (`reference_of`); `updated_by` is the latest
    message that updated it, `cancelled_by` the one that cancelled it ("" if none);
    `rejected` says the recipient refused it (it never arrived, so nothing may refer to it,
    and if it was an UPDATE or CANCEL it changed nothing).
    """

    party: str
    body: str
    action: int = common_pb2.ACTION_NEW
    reference: str = ""
    updated_by: str = ""
    cancelled_by: str = ""
    rejected: bool = False


def standing_of(envelope: envelope_pb2.Envelope) -> Standing:
    """The standing of a message just journaled."""
    return Standing(
        envelope.sender_party,
        envelope.WhichOneof("body") or "",
        envelope.action,
        reference_of(envelope),
    )


def reference_of(envelope: envelope_pb2.Envelope) -> str:
    """The message an UPDATE or CANCEL replaces or withdraws (`references[0]`), else ""."""
    if envelope.action in (UPDATE, CANCEL) and envelope.references:
        return envelope.references[0]
    return ""


class Rule(Enum):
    """The rule a message breaks; each value is the short name quoted in errors."""

    UNKNOWN_REFERENCE = "reference-unknown"  # references[0] names no message held
    OTHER_PARTY = "reference-other-party"  # ... a message of the other party
    REFERENCE_REJECTED = "reference-rejected"  # ... a message the peer refused
    ACKNOWLEDGEMENT = "reference-acknowledgement"  # ... an acknowledgement
    CANCELLATION_FINAL = "reference-cancellation"  # ... a cancellation itself
    UPDATE_AFTER_CANCEL = "update-after-cancel"  # ... a cancelled message (UPDATE)
    CANCEL_ONCE = "cancel-once"  # ... a cancelled message (CANCEL)
    UPDATE_BODY_TYPE = "update-body-type"  # UPDATE with another body type
    CANCEL_BODY_TYPE = "cancel-body-type"  # CANCEL neither of the same type nor free_text


@dataclass(frozen=True)
class Breach:
    """A broken rule of a message's life; `detail` says it for people, naming the rule."""

    rule: Rule
    detail: str

    def __str__(self) -> str:
        return self.detail


def breach(envelope: envelope_pb2.Envelope, held: Standing | None) -> Breach | None:
    """Which rule an UPDATE or CANCEL breaks, given what is held of `references[0]`, if any.

    `held` is the standing of `references[0]` as this gateway holds it (None: unknown). A NEW
    message, or one with no reference (the validator reports that), breaks none of these.
    """
    reference = reference_of(envelope)
    if not reference:
        return None
    verb = "UPDATE" if envelope.action == UPDATE else "CANCEL"

    def broken(rule: Rule, why: str) -> Breach:
        return Breach(rule, f"references[0]: {why} ({verb} rule {rule.value})")

    if held is None:
        return broken(Rule.UNKNOWN_REFERENCE, f"no message {reference} is held")
    if held.party != envelope.sender_party:
        return broken(
            Rule.OTHER_PARTY,
            f"{reference} is a message of party {held.party}; only the sender's own messages "
            "are updated or cancelled",
        )
    if held.rejected:
        return broken(
            Rule.REFERENCE_REJECTED,
            f"{reference} was refused by the recipient and never delivered; send a new message",
        )
    if held.body == ACKNOWLEDGEMENT:
        return broken(
            Rule.ACKNOWLEDGEMENT,
            f"{reference} is an acknowledgement; acknowledge again instead (the latest stands)",
        )
    if held.action == CANCEL:
        return broken(
            Rule.CANCELLATION_FINAL, f"{reference} is itself a cancellation, which is final"
        )
    if held.cancelled_by:
        if envelope.action == UPDATE:
            return broken(
                Rule.UPDATE_AFTER_CANCEL,
                f"{reference} was cancelled by {held.cancelled_by}; an UPDATE never follows "
                "a CANCEL",
            )
        return broken(
            Rule.CANCEL_ONCE,
            f"{reference} was already cancelled by {held.cancelled_by}; a message is "
            "cancelled once",
        )
    body = envelope.WhichOneof("body") or ""
    if envelope.action == UPDATE and body != held.body:
        return broken(
            Rule.UPDATE_BODY_TYPE,
            f"{reference} is a {held.body}; an UPDATE keeps the body type, got {body}",
        )
    if envelope.action == CANCEL and body not in (held.body, FREE_TEXT):
        return broken(
            Rule.CANCEL_BODY_TYPE,
            f"{reference} is a {held.body}; a CANCEL restates it (a {held.body}) or gives "
            f"the reason (a {FREE_TEXT}), got {body}",
        )
    return None


def after(envelope: envelope_pb2.Envelope, held: Standing) -> Standing:
    """The standing of `references[0]` once `envelope` (which broke no rule) is journaled."""
    return chained(held, envelope.message_id, envelope.action)


def chained(held: Standing, message_id: str, action: int) -> Standing:
    """`held` once the message `message_id` with `action` referred to it (NEW: no change)."""
    if action == UPDATE:
        return replace(held, updated_by=message_id)
    if action == CANCEL:
        return replace(held, cancelled_by=message_id)
    return held


def unchained(held: Standing, message_id: str) -> Standing:
    """`held` once the UPDATE or CANCEL `message_id` that referred to it no longer counts (the
    recipient refused it, or it was never journaled). A refused later UPDATE leaves no
    `updated_by` behind, even if an earlier one stands: the index uses `updated_by` only as
    a marker, and the operator record reads the chain back from the journal."""
    if held.cancelled_by == message_id:
        held = replace(held, cancelled_by="")
    if held.updated_by == message_id:
        held = replace(held, updated_by="")
    return held


# ---------------------------------------------------------------------------- expiry


def expire_ns(envelope: envelope_pb2.Envelope) -> int:
    """`expire_time` in nanoseconds since the epoch; 0 if the content does not expire."""
    return envelope.expire_time.ToNanoseconds() if envelope.HasField("expire_time") else 0


def is_expired(expires_ns: int, now_ns: int) -> bool:
    """Whether content with this expiry (0: none) is stale at `now_ns`."""
    return 0 < expires_ns <= now_ns


def expiry_problem(envelope: envelope_pb2.Envelope, now_ns: int) -> str:
    """Why `Send` refuses the envelope's expiry ("" if it does not): already past."""
    expires = expire_ns(envelope)
    if not is_expired(expires, now_ns):
        return ""
    ago = (now_ns - expires) / 1e9
    return (
        f"envelope.expire_time: already past ({ago:.3f} s ago by this gateway's clock); "
        "a message must not be sent expired"
    )
