"""The receiver's acceptance checks for one delivery, in the spec's order, as one pure function.

`proto/hotline/v1/peer_link.proto`, "Processing a delivery", numbers eight checks; the first
that fails decides the rejection. `check_delivery` applies them in that order and returns either
`link.Accepted` (with the parsed envelope, and what accepting it changes in the index) or the
`link.RejectionItem` to settle the sequence with. It reads no clock, socket or file: the keys and
parties are its parameters, and "was this id seen before, and where does that message stand in
its chain" is a lookup the link core passes in (its in-memory index, loaded from the journal at
start and kept current by the core).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from certs.errors import IdentityError
from certs.identity import Role, parse_spiffe_id
from hotline import lifecycle, link
from hotline.errors import SignatureError
from hotline.ids import is_message_id
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, KeyRing
from hotline.strict import describe, strip_unknown_fields
from hotline.v1 import common_pb2, envelope_pb2
from hotline.validation import validate_envelope

MAX_VIOLATIONS = 64  # RejectionItem.violations holds at most this many
MAX_DETAIL = 1024  # RejectionItem.detail, in characters


@dataclass(frozen=True)
class Inspection:
    """What the checks that read only the delivery's bytes and the keys found (1, 2 and 4-6):
    `early` is a refusal by check 1 or 2, which decides before the duplicate check; `envelope`
    the parsed envelope; `late` a refusal by check 4, 5 or 6, which decides after it. Pure, so
    a receiver may run them ahead of the ordered checks, a few deliveries at a time."""

    early: link.RejectionItem | None = None
    envelope: envelope_pb2.Envelope | None = None
    late: link.RejectionItem | None = None


@dataclass(frozen=True)
class Acceptance:
    """What the checks need to know: the keys, the two parties of this link direction, and the
    lane the deliveries arrive on (check 8; None: not checked).

    `inspect_ahead(delivery)` runs the byte-only checks early and keeps the result for the
    call that decides that delivery (the receiver's adapter does it for a lower lane's batch a
    few deliveries at a time, yielding to the other lanes in between); a delivery not inspected
    ahead is inspected when it is decided. What is kept is bounded: it is dropped when more
    than `MAX_AHEAD` deliveries wait.
    """

    keyring: KeyRing
    sender_party: str  # the authenticated peer
    receiver_party: str  # this gateway's party
    lane: int | None = None
    _ahead: dict[tuple[int, bytes], Inspection] = field(
        default_factory=dict, compare=False, repr=False
    )

    def inspect_ahead(self, delivery: link.Delivery) -> None:
        if len(self._ahead) >= MAX_AHEAD:
            self._ahead.clear()
        self._ahead[delivery.sequence, delivery.digest] = inspect_delivery(
            delivery,
            keyring=self.keyring,
            sender_party=self.sender_party,
            receiver_party=self.receiver_party,
        )

    def __call__(
        self, delivery: link.Delivery, seen: Callable[[str], link.Seen | None]
    ) -> link.Verdict:
        inspection = self._ahead.pop((delivery.sequence, delivery.digest), None)
        if inspection is None:
            inspection = inspect_delivery(
                delivery,
                keyring=self.keyring,
                sender_party=self.sender_party,
                receiver_party=self.receiver_party,
            )
        return decide_delivery(
            delivery, inspection, seen, receiver_party=self.receiver_party, lane=self.lane
        )


MAX_AHEAD = 1024


def check_delivery(
    delivery: link.Delivery,
    seen: Callable[[str], link.Seen | None],
    *,
    keyring: KeyRing,
    sender_party: str,
    receiver_party: str,
    lane: int | None = None,
) -> link.Verdict:
    """Apply checks 1-8 to one delivery whose `payload` is its `SignedPayload` envelope (check 8
    only when `lane` is given)."""
    inspection = inspect_delivery(
        delivery, keyring=keyring, sender_party=sender_party, receiver_party=receiver_party
    )
    return decide_delivery(delivery, inspection, seen, receiver_party=receiver_party, lane=lane)


def _refusal(
    delivery: link.Delivery,
    reason: link.RejectReason,
    detail: str,
    message_id: str = "",
    violations: tuple[tuple[str, str], ...] = (),
) -> link.RejectionItem:
    return link.RejectionItem(
        delivery.sequence,
        message_id if is_message_id(message_id) else "",  # the spec: empty if malformed
        reason,
        detail[:MAX_DETAIL],
        violations[:MAX_VIOLATIONS],
        delivery.digest,
    )


def inspect_delivery(
    delivery: link.Delivery, *, keyring: KeyRing, sender_party: str, receiver_party: str
) -> Inspection:
    """Checks 1, 2 and 4-6, which read only the delivery and the keys."""
    signed = delivery.payload
    if not isinstance(signed, common_pb2.SignedPayload):
        raise TypeError("a delivery's payload must be its SignedPayload envelope")
    # 1. The signature, before anything in the payload is read (not even its message id).
    try:
        payload = keyring.verify(signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party=sender_party)
    except SignatureError as exc:
        return Inspection(_refusal(delivery, link.RejectReason.BAD_SIGNATURE, str(exc)))
    # 2. The payload parses, into fields this specification defines only.
    envelope = envelope_pb2.Envelope()
    try:
        envelope.ParseFromString(payload)
    except Exception as exc:
        return Inspection(
            _refusal(
                delivery,
                link.RejectReason.INVALID_MESSAGE,
                f"envelope bytes do not parse: {exc}",
            )
        )
    unknown = strip_unknown_fields(envelope)
    if unknown:
        return Inspection(
            _refusal(
                delivery,
                link.RejectReason.INVALID_MESSAGE,
                "the envelope holds fields this specification does not define: "
                + describe(unknown),
                envelope.message_id,
                tuple((f.path or "message_id", str(f)) for f in unknown),
            )
        )
    message_id = envelope.message_id
    # 4. Every constraint of the specification.
    violations = validate_envelope(envelope)
    if violations:
        return Inspection(
            None,
            envelope,
            _refusal(
                delivery,
                link.RejectReason.INVALID_MESSAGE,
                f"{len(violations)} field violation(s): "
                + "; ".join(str(v) for v in violations[:8])[:900],
                message_id,
                # FieldViolation requires a non-empty path
                tuple((v.field, v.description) for v in violations if v.field),
            ),
        )
    # 5. The parties, and who the envelope says wrote it.
    wrong = wrong_party(envelope, sender_party=sender_party, receiver_party=receiver_party)
    if wrong:
        return Inspection(
            None, envelope, _refusal(delivery, link.RejectReason.WRONG_PARTY, wrong, message_id)
        )
    # 6. Releasable to us (a gateway with a classification ceiling would apply it here too).
    unreleasable = releasability_problem(envelope, receiver_party)
    if unreleasable:
        return Inspection(
            None,
            envelope,
            _refusal(delivery, link.RejectReason.NOT_RELEASABLE, unreleasable, message_id),
        )
    return Inspection(None, envelope)


def decide_delivery(
    delivery: link.Delivery,
    inspection: Inspection,
    seen: Callable[[str], link.Seen | None],
    *,
    receiver_party: str,
    lane: int | None = None,
) -> link.Verdict:
    """Checks 1-8 in the spec's order, from an inspection and the index of ids seen (3, 7)."""
    if inspection.early is not None:
        return inspection.early
    envelope = inspection.envelope
    assert envelope is not None
    message_id = envelope.message_id
    # 3. Not journaled before: from this sender (a duplicate), or by us (ids are unique forever).
    held = seen(message_id) if message_id else None
    if held is not None:
        if held.sequence == 0:
            return _refusal(
                delivery,
                link.RejectReason.INVALID_MESSAGE,
                f"message_id {message_id} already names a message of party {receiver_party}; "
                "message ids must be unique across both parties, forever",
                message_id,
            )
        return _refusal(
            delivery,
            link.RejectReason.DUPLICATE_MESSAGE_ID,
            f"message id already received under sequence {held.sequence}"
            + (f" of lane {held.lane}" if lane is not None and held.lane != lane else ""),
            message_id,
        )
    # 4-6, found by the inspection.
    if inspection.late is not None:
        return inspection.late
    # 7. The rules of a message's life: what an UPDATE or CANCEL refers to, as we hold it.
    reference = lifecycle.reference_of(envelope)
    referenced = seen(reference) if reference else None
    standing = referenced.standing if referenced is not None else None
    broken = lifecycle.breach(envelope, standing)
    if broken is not None:
        return _refusal(
            delivery,
            link.RejectReason.INVALID_MESSAGE,
            broken.detail,
            message_id,
            (("references[0]", broken.detail),),
        )
    # 8. The lane is the message's precedence.
    if lane is not None and envelope.precedence != lane:
        name = common_pb2.Precedence.Name(envelope.precedence)
        detail = f"a {name} message arrived on the lane of {common_pb2.Precedence.Name(common_pb2.Precedence.ValueType(lane))}"
        return _refusal(
            delivery,
            link.RejectReason.INVALID_MESSAGE,
            detail,
            message_id,
            (("precedence", detail),),
        )
    own = link.Seen(delivery.sequence, delivery.digest, lifecycle.standing_of(envelope))
    if lane is not None:
        own = replace(own, lane=lane)
    index: tuple[tuple[str, link.Seen], ...] = ((message_id, own),)
    if referenced is not None and standing is not None:
        index += ((reference, replace(referenced, standing=lifecycle.after(envelope, standing))),)
    return link.Accepted(delivery, message_id, envelope, index)


def wrong_party(envelope: envelope_pb2.Envelope, *, sender_party: str, receiver_party: str) -> str:
    """Why the envelope may not travel from `sender_party` to `receiver_party`, or "".

    The parties must be the link's, and every identity the envelope names as its author must be
    one the sending party may speak for (`originator_problem`).
    """
    if envelope.sender_party != sender_party or envelope.recipient_party != receiver_party:
        return (
            f"envelope is {envelope.sender_party}->{envelope.recipient_party}, but this link "
            f"carries {sender_party}->{receiver_party}"
        )
    return originator_problem(envelope, sender_party)


def originator_problem(envelope: envelope_pb2.Envelope, sender_party: str) -> str:
    """Why the identities the envelope names as its authors may not originate it, or "".

    The roles are the SPIFFE path prefixes of the spec ("Identities and roles"): an operator
    (`spiffe://<party>.hotline/operator/<name>`) may originate any body; the gateway
    (`spiffe://<party>.hotline/gateway`) only a scheduled link test (`link_test` with
    `scheduled: true`); a signing identity nothing. An acknowledgement's `responder` is always
    an operator: a person answered. All of them belong to the sending party's trust domain.
    """
    body = envelope.WhichOneof("body")
    scheduled_test = body == "link_test" and envelope.link_test.scheduled
    named = [("originator", envelope.originator, scheduled_test)]
    if body == "acknowledgement":
        named.append(("acknowledgement.responder", envelope.acknowledgement.responder, False))
    for named_field, uri, gateway_may in named:
        party, role, problem = _identity_of(uri)
        if problem:
            return f"{named_field}: {problem}"
        if party != sender_party:
            return f"{named_field} is {uri}, not an identity of party {sender_party}"
        if role is Role.OPERATOR or (role is Role.GATEWAY and gateway_may):
            continue
        if role is Role.GATEWAY:
            return (
                f"{named_field} is {uri}: a gateway originates only scheduled link tests "
                "(link_test with scheduled: true)"
            )
        return f"{named_field} is {uri}, not an operator of party {sender_party}"
    return ""


def releasability_problem(envelope: envelope_pb2.Envelope, receiver_party: str) -> str:
    """Why the envelope may not be released to `receiver_party`, or "" (check 6)."""
    if receiver_party in envelope.handling.releasable_to:
        return ""
    return f"handling.releasable_to does not include {receiver_party}"


@functools.lru_cache(maxsize=4096)
def _identity_of(uri: str) -> tuple[str, Role | None, str]:
    """(party, role, why it is not an identity at all); cached: a link carries the same few
    operators' ids over and over."""
    try:
        identity = parse_spiffe_id(uri)
    except IdentityError as exc:
        return "", None, str(exc)
    return identity.party, identity.role, ""
