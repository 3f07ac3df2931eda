"""The gateway's domain steps for its own operators: submit (send) and acknowledge.

Plain methods, no gRPC: the servicer (`server.operator_service`) is a thin adapter that calls
them and turns a `server.errors.GatewayError` into its status code. Submission is batch-native:
`submit` takes one envelope or up to `MAX_BATCH`, checks each exactly as a lone `Send` would be
checked, signs each, journals every one that passes in ONE durable commit, then queues them on
the peer link. A batch of one is the `Send` RPC.

The steps for each envelope, in order (the spec's `OperatorService.Send` errors):
  1. sender_party / originator, if set, are the caller's      PERMISSION_DENIED (journaled)
  2. only fields the spec defines (hotline.strict), at any
     depth; recipient is the peer; not an acknowledgement body INVALID_ARGUMENT
  3. fill (id, sender, originator, create_time), validate,
     releasable to the peer, not already expired                 INVALID_ARGUMENT
     the caller's role may originate the body                   PERMISSION_DENIED
     at most MAX_ENVELOPE_BYTES serialized                      RESOURCE_EXHAUSTED
  4. a message id already used: the same envelope again is an idempotent retry (its original
     response); anything else                                  ALREADY_EXISTS
  5. the rules of a message's life (`hotline.lifecycle`): an UPDATE / CANCEL refers to one of
     our own messages that may still be updated or cancelled    NOT_FOUND / FAILED_PRECONDITION
Step 5 reads the store's in-memory index and, when it passes, marks the message referred to
as updated or cancelled there at once (before the journal commit, undone if the envelope is not
journaled), so two calls racing to cancel one message cannot both pass.
Before any of them, the whole call is admitted or refused: sending held because this gateway's
journal lost history (FAILED_PRECONDITION), the caller's send rate and the outbox bound
(RESOURCE_EXHAUSTED), so a burst cannot drown the gateway or its link.

Precedence has a lane here too (`PrecedenceGate`): the checking and signing of PRIORITY and
ROUTINE submissions take turns through a few slots, while a submission holding a FLASH or
IMMEDIATE envelope goes straight through, so an urgent message never queues on the event loop
behind a crowd of routine ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from certs.identity import Identity
from hotline import lifecycle, link
from hotline.acceptance import originator_problem, releasability_problem
from hotline.ids import new_message_id
from hotline.link import MAX_ENVELOPE_BYTES
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, Signer
from hotline.strict import describe, strip_unknown_fields
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2
from hotline.validation import validate, validate_envelope
from hotline.wire import timestamp_ns
from server.errors import (
    AlreadyExists,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from server.journal import Kind
from server.store import IN, OUT, DuplicateMessage, Journaled, Outbound, Store, WrongState, outgoing

log = logging.getLogger("hotline.service")

MAX_BATCH = 256  # envelopes per SendBatch (the spec's bound)
MAX_VIOLATIONS = 64  # violations quoted in one error, as on the peer link
MAX_REFERENCES = 16  # Envelope.references, checked before validation builds anything
URGENT = frozenset({common_pb2.PRECEDENCE_FLASH, common_pb2.PRECEDENCE_IMMEDIATE})
YIELD_EVERY = 16  # envelopes checked or signed between yields to the event loop (a large batch)


class TokenBucket:
    """Per-operator rate limit on sends (RESOURCE_EXHAUSTED when empty)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, who: str, n: int = 1) -> bool:
        """Take `n` tokens at once, or none."""
        now = time.monotonic()
        tokens, last = self._buckets.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < n:
            self._buckets[who] = (tokens, now)
            return False
        self._buckets[who] = (tokens - n, now)
        return True


class PrecedenceGate:
    """The submit path's precedence lane: room on the event loop for urgent messages.

    The gateway does its protocol work on one event loop, which runs ready work first in,
    first out. With many PRIORITY or ROUTINE submissions being checked and signed at once, an
    urgent one would wait behind every one of them at each of its steps (measured: a FLASH
    Send took ~60 ms to be journaled while 64 pipelined ROUTINE senders saturated the gateway,
    against ~2 ms idle). So at most `slots` non-urgent submissions do that work at a time; the
    others wait for a slot, which costs the loop nothing. A submission holding any FLASH or
    IMMEDIATE envelope never waits for a slot. A slot is held for checking and signing only,
    not while the journal commits, so commits still gather many submissions.
    """

    def __init__(self, slots: int = 8) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._free = asyncio.Semaphore(slots)

    @staticmethod
    def urgent(envelopes: Sequence[envelope_pb2.Envelope]) -> bool:
        return any(e.precedence in URGENT for e in envelopes)

    async def enter(self, urgent: bool) -> bool:
        """Wait for a slot unless `urgent`; True if a slot was taken (give it back with
        `leave`)."""
        if urgent:
            return False
        await self._free.acquire()
        return True

    def leave(self) -> None:
        self._free.release()

    @property
    def waiting(self) -> bool:
        """Some non-urgent submission is waiting for a slot."""
        return self._free.locked()


def violations_text(problems: Sequence[object]) -> str:
    """At most MAX_VIOLATIONS problems, joined as the spec says; the rest counted."""
    shown = "; ".join(str(p) for p in problems[:MAX_VIOLATIONS])
    more = len(problems) - MAX_VIOLATIONS
    return shown + (f"; ... and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class _Prepared:
    index: int
    envelope: envelope_pb2.Envelope
    # what step 5 changed in the index: (referenced id, standing before, standing after)
    reserved: tuple[str, link.Seen, link.Seen] | None = None


class GatewayService:
    """What a party's operators may ask of their gateway (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        signer: Signer,
        enqueue: Callable[[link.Outgoing], None],
        rate: TokenBucket,
        outbox_depth: Callable[[], int],
        outbox_limit: int,
        gate: PrecedenceGate | None = None,
        held: Callable[[], str] | None = None,
    ) -> None:
        self._store = store
        self._gate = gate or PrecedenceGate()
        self._held = held  # why sending is held ("" if it is not): a journal that lost history
        self._signer = signer
        self._enqueue = enqueue
        self._rate = rate
        self._outbox_depth = outbox_depth
        self.outbox_limit = outbox_limit

    @property
    def party(self) -> str:
        return self._store.party

    @property
    def peer_party(self) -> str:
        return self._store.peer_party

    # ------------------------------------------------------------------ submit

    async def submit(
        self, envelopes: Sequence[envelope_pb2.Envelope], who: Identity
    ) -> list[operator_pb2.SendResponse | GatewayError]:
        """Send `envelopes` for the caller: one result per envelope, in order.

        Raises `GatewayError` only for the call as a whole (nothing journaled): an empty or
        oversized batch, the caller's rate, the outbox bound.
        """
        if not 1 <= len(envelopes) <= MAX_BATCH:
            raise InvalidArgument(f"envelopes: 1..{MAX_BATCH} items, got {len(envelopes)}")
        self._admit(len(envelopes), who)
        results: list[operator_pb2.SendResponse | GatewayError | None] = [None] * len(envelopes)
        prepared: list[_Prepared] = []
        twins: list[tuple[int, int]] = []  # (index, index of the first use of its id)
        urgent = self._gate.urgent(envelopes)
        try:
            slot = await self._gate.enter(urgent)
            try:
                await self._prepare(envelopes, who, urgent, results, prepared, twins)
                signed = await self._sign(prepared, urgent)
            finally:
                if slot:
                    self._gate.leave()
            if prepared:
                await self._journal(prepared, signed, results, urgent)
        finally:
            for p in prepared:
                if not isinstance(results[p.index], operator_pb2.SendResponse):
                    self._release(p)
        self._chain_within(prepared, results)
        for index, first in twins:
            # the same id twice in one batch: the later one is a retry of the first
            answer = results[first]
            if envelopes[index] == envelopes[first] and isinstance(
                answer, operator_pb2.SendResponse
            ):
                results[index] = answer
            else:
                results[index] = AlreadyExists(
                    f"message_id {envelopes[index].message_id} is used twice in this batch "
                    "for different envelopes"
                )
        final = [r for r in results if r is not None]
        assert len(final) == len(envelopes)
        return final

    async def _prepare(
        self,
        envelopes: Sequence[envelope_pb2.Envelope],
        who: Identity,
        urgent: bool,
        results: list[operator_pb2.SendResponse | GatewayError | None],
        prepared: list[_Prepared],
        twins: list[tuple[int, int]],
    ) -> None:
        """Steps 1-5 for each envelope (a copy): an error or an idempotent answer goes into
        `results`, a second use of an id in this batch into `twins`, the rest into `prepared`
        (with the change to the message it refers to reserved)."""
        first_of: dict[str, int] = {}  # message id -> index of its first use in this batch
        batch: dict[str, link.Seen] = {}  # the standing of this batch's messages, so far
        for index, given in enumerate(envelopes):
            if index and index % YIELD_EVERY == 0 and not urgent:
                await asyncio.sleep(0)  # a large batch lets urgent work in between
            envelope = envelope_pb2.Envelope()
            envelope.CopyFrom(given)
            try:
                await self._check(envelope, who)
            except GatewayError as exc:
                results[index] = exc
                continue
            held = self._store.seen.get(envelope.message_id)
            if held is not None:
                results[index] = self._idempotent(envelope, ours=held.sequence == 0)
            elif envelope.message_id in first_of:
                twins.append((index, first_of[envelope.message_id]))
            else:
                try:
                    reserved = self._check_life(envelope, batch)
                except GatewayError as exc:
                    results[index] = exc
                    continue
                first_of[envelope.message_id] = index
                prepared.append(_Prepared(index, envelope, reserved))
                batch[envelope.message_id] = link.Seen(0, b"", lifecycle.standing_of(envelope))

    def _admit(self, n: int, who: Identity) -> None:
        why = self._held() if self._held is not None else ""
        if why:
            raise FailedPrecondition(f"sending is held: {why}")
        if not self._rate.take(who.spiffe_id, n):
            raise ResourceExhausted(
                f"{who} is sending faster than {self._rate.rate:g} messages/s "
                f"(burst {self._rate.burst}); retry with backoff"
            )
        depth = self._outbox_depth()
        if depth + n > self.outbox_limit:
            raise ResourceExhausted(
                f"outbox full: {depth} messages await delivery to {self.peer_party} "
                f"(limit {self.outbox_limit}); retry when the link has drained"
            )

    async def _check(self, envelope: envelope_pb2.Envelope, who: Identity) -> None:
        impersonation = ""
        if envelope.sender_party and envelope.sender_party != who.party:
            impersonation = (
                f"sender_party is {envelope.sender_party}, "
                f"but the caller {who} is of party {who.party}"
            )
        elif envelope.originator and envelope.originator != who.spiffe_id:
            impersonation = f"originator is {envelope.originator}, but the caller is {who}"
        if impersonation:
            await self._store.record_event(
                Kind.SECURITY,
                {"code": "PERMISSION_DENIED", "detail": f"{who} calling Send: {impersonation}"},
            )
            raise PermissionDenied(impersonation)
        unknown = strip_unknown_fields(envelope)
        if unknown:
            raise InvalidArgument(
                "envelope: holds fields this specification does not define (a signed envelope "
                "may not; the peer would refuse it as INVALID_MESSAGE): "
                + describe(unknown, prefix="envelope")
            )
        if len(envelope.references) > MAX_REFERENCES:
            raise InvalidArgument(
                f"envelope.references: at most {MAX_REFERENCES} items, "
                f"got {len(envelope.references)}"
            )
        problems: list[object] = []
        if envelope.recipient_party and envelope.recipient_party != self.peer_party:
            problems.append(
                f"envelope.recipient_party: must be the peer {self.peer_party}, "
                f"got {envelope.recipient_party}"
            )
        if envelope.WhichOneof("body") == "acknowledgement":
            problems.append("envelope.acknowledgement: acknowledgements are made with Acknowledge")
        # Validate the envelope as it will travel (after filling the gateway's fields), so a
        # Send never journals what the peer would refuse (an expiry already past, say).
        self._fill(envelope, who)
        problems += validate(envelope, filled=True, prefix="envelope")
        unreleasable = releasability_problem(envelope, self.peer_party)
        if unreleasable:
            problems.append(f"envelope.{unreleasable} (not releasable to the recipient)")
        expiry = lifecycle.expiry_problem(envelope, time.time_ns())
        if expiry:
            problems.append(expiry)
        if problems:
            raise InvalidArgument(violations_text(problems))
        not_author = originator_problem(envelope, self.party)
        if not_author:  # e.g. the gateway itself originating anything but a scheduled link test
            raise PermissionDenied(not_author)
        size = envelope.ByteSize()
        if size > MAX_ENVELOPE_BYTES:
            raise ResourceExhausted(
                f"envelope: {size} bytes serialized; at most {MAX_ENVELOPE_BYTES} fit the peer link"
            )

    def _fill(self, envelope: envelope_pb2.Envelope, who: Identity) -> None:
        """The envelope defaults: the one place the gateway fills an operator's envelope."""
        if not envelope.message_id:
            envelope.message_id = new_message_id()
        if not envelope.sender_party:
            envelope.sender_party = self.party
        if not envelope.originator:
            envelope.originator = who.spiffe_id
        if not envelope.HasField("create_time"):
            envelope.create_time.FromNanoseconds(time.time_ns())

    def _check_life(
        self, envelope: envelope_pb2.Envelope, batch: dict[str, link.Seen]
    ) -> tuple[str, link.Seen, link.Seen] | None:
        """Step 5: an UPDATE or CANCEL against what we hold of `references[0]` (the journal's
        index, or an earlier envelope of this batch). When it passes, the message referred to
        is marked updated or cancelled in the index now; the reservation is returned so that
        `_release` can undo it if the envelope is not journaled."""
        reference = lifecycle.reference_of(envelope)
        if not reference:
            return None
        index = self._store.seen
        held = index.get(reference) or batch.get(reference)
        broken = lifecycle.breach(envelope, held.standing if held is not None else None)
        if broken is not None:
            if broken.rule is lifecycle.Rule.UNKNOWN_REFERENCE:
                raise NotFound(f"references[0]: no message {reference} in the journal")
            raise FailedPrecondition(broken.detail)
        assert held is not None
        assert held.standing is not None
        marked = replace(held, standing=lifecycle.after(envelope, held.standing))
        if reference in index:
            index[reference] = marked
            return reference, held, marked
        batch[reference] = marked  # journaled in this same commit, before this envelope
        return None

    def _chain_within(
        self,
        prepared: list[_Prepared],
        results: list[operator_pb2.SendResponse | GatewayError | None],
    ) -> None:
        """Mark in the index the UPDATEs and CANCELs of messages of this same batch, once both
        are journaled (those of earlier messages were marked by `_check_life`)."""
        journaled = {
            p.envelope.message_id
            for p in prepared
            if isinstance(results[p.index], operator_pb2.SendResponse)
        }
        for p in prepared:
            reference = lifecycle.reference_of(p.envelope)
            if p.reserved is not None or p.envelope.message_id not in journaled:
                continue
            held = self._store.seen.get(reference) if reference in journaled else None
            if held is not None and held.standing is not None:
                self._store.seen[reference] = replace(
                    held, standing=lifecycle.after(p.envelope, held.standing)
                )

    def _release(self, prepared: _Prepared) -> None:
        """Undo step 5's mark for an envelope that was not journaled (unless overtaken)."""
        if prepared.reserved is None:
            return
        reference, before, marked = prepared.reserved
        if self._store.seen.get(reference) == marked:
            self._store.seen[reference] = before

    def _idempotent(
        self, envelope: envelope_pb2.Envelope, *, ours: bool
    ) -> operator_pb2.SendResponse | GatewayError:
        record = self._store.record(envelope.message_id) if ours else None
        if record is None or record.direction != OUT:
            return AlreadyExists(f"message_id {envelope.message_id} was used by the other party")
        original = record.envelope
        probe = envelope_pb2.Envelope()
        probe.CopyFrom(envelope)
        probe.create_time.CopyFrom(original.create_time)  # filled by us if empty on the retry
        if probe != original:
            return AlreadyExists(
                f"message_id {envelope.message_id} was already used for a different envelope"
            )
        return operator_pb2.SendResponse(
            message_id=original.message_id,
            journal_position=record.journal_position,
            state=record.state,
            journal_time=record.journal_time,
            acknowledge_deadline_time=record.acknowledge_deadline_time,
        )

    async def _sign(self, prepared: list[_Prepared], urgent: bool) -> list[Outbound]:
        batch = []
        for n, p in enumerate(prepared):
            if n and n % YIELD_EVERY == 0 and not urgent:
                await asyncio.sleep(0)
            payload = p.envelope.SerializeToString()
            batch.append(Outbound(self._signer.sign(PAYLOAD_TYPE_ENVELOPE, payload), p.envelope))
        return batch

    async def _journal(
        self,
        prepared: list[_Prepared],
        batch: list[Outbound],
        results: list[operator_pb2.SendResponse | GatewayError | None],
        urgent: bool,
    ) -> None:
        outcomes = await self._store.journal_outbound_many(batch, urgent=urgent)
        for p, item, outcome in zip(prepared, batch, outcomes, strict=True):
            if isinstance(outcome, DuplicateMessage):  # raced with another call
                results[p.index] = self._idempotent(p.envelope, ours=True)
                continue
            self._enqueue(
                outgoing(
                    item.signed,
                    p.envelope.message_id,
                    p.envelope.precedence,
                    outcome.position,
                    after=lifecycle.reference_of(p.envelope),
                )
            )
            results[p.index] = _response(outcome)

    # ------------------------------------------------------------------ acknowledge

    async def acknowledge(
        self, request: operator_pb2.AcknowledgeRequest, who: Identity
    ) -> operator_pb2.AcknowledgeResponse:
        violations = validate(request)
        if violations:
            raise InvalidArgument(violations_text(violations))
        self._admit(1, who)
        target = self._store.record(request.message_id)
        if target is None:
            raise NotFound(f"message_id: no message {request.message_id} in the journal")
        if target.direction != IN:
            raise FailedPrecondition(
                f"{request.message_id} was sent by this party; only messages received from "
                f"{self.peer_party} are acknowledged"
            )
        if target.envelope.WhichOneof("body") == "acknowledgement":
            raise FailedPrecondition(f"{request.message_id} is itself an acknowledgement")
        original = target.envelope
        ack = bodies_pb2.Acknowledgement(
            acknowledged_message_id=original.message_id,
            level=request.level,
            responder=who.spiffe_id,
        )
        if request.HasField("remarks"):
            ack.remarks.CopyFrom(request.remarks)
        if request.HasField("reason"):
            ack.reason.CopyFrom(request.reason)
        envelope = envelope_pb2.Envelope(
            message_id=request.ack_message_id or new_message_id(),
            sender_party=self.party,
            recipient_party=self.peer_party,
            originator=who.spiffe_id,
            status=original.status,
            precedence=original.precedence,
            language=_language_of(request) or original.language,
            action=common_pb2.ACTION_NEW,
            references=[original.message_id],
            acknowledgement=ack,
        )
        envelope.handling.CopyFrom(original.handling)
        envelope.create_time.FromNanoseconds(time.time_ns())
        unknown = strip_unknown_fields(envelope)  # remarks and reason come from the request
        if unknown:
            raise InvalidArgument(
                "remarks or reason: the acknowledgement would hold fields this specification "
                "does not define: " + describe(unknown, prefix="envelope")
            )
        violations = validate_envelope(envelope)
        if violations:
            raise InvalidArgument(violations_text(violations))
        signed = self._signer.sign(PAYLOAD_TYPE_ENVELOPE, envelope.SerializeToString())
        try:
            journaled = await self._store.journal_outbound(
                signed, envelope, acknowledges=original.message_id
            )
        except WrongState as exc:
            raise FailedPrecondition(str(exc)) from None
        except DuplicateMessage as dup:
            existing = self._store.record(dup.message_id)
            if (
                existing is not None
                and existing.envelope.WhichOneof("body") == "acknowledgement"
                and existing.envelope.acknowledgement.acknowledged_message_id == original.message_id
                and existing.envelope.acknowledgement.level == request.level
            ):
                return operator_pb2.AcknowledgeResponse(
                    ack_message_id=dup.message_id, journal_position=existing.journal_position
                )
            raise AlreadyExists(f"ack_message_id {dup.message_id} was already used") from None
        self._enqueue(
            outgoing(signed, envelope.message_id, envelope.precedence, journaled.position)
        )
        log.info(
            "%s acknowledged %s (%s)",
            who,
            original.message_id,
            bodies_pb2.AcknowledgementLevel.Name(request.level),
        )
        return operator_pb2.AcknowledgeResponse(
            ack_message_id=envelope.message_id, journal_position=journaled.position
        )


def _response(journaled: Journaled) -> operator_pb2.SendResponse:
    return operator_pb2.SendResponse(
        message_id=journaled.message_id,
        journal_position=journaled.position,
        state=operator_pb2.DELIVERY_STATE_JOURNALED,
        journal_time=timestamp_ns(journaled.journal_time_ns),
        acknowledge_deadline_time=timestamp_ns(journaled.deadline_ns),
    )


def _language_of(request: operator_pb2.AcknowledgeRequest) -> str:
    for text in (request.remarks, request.reason):
        for variant in text.variants:
            if variant.kind == common_pb2.TRANSLATION_KIND_ORIGINAL:
                return variant.language
    return ""
