"""`OperatorService`: what a party's own watch officers may do at their gateway.

Send and Acknowledge validate, fill, sign and journal, and answer once the journal commit is
durable; delivery happens afterwards over the peer link. Watch replays the journal's events
from a cursor and then follows live commits, so a console that reconnects misses nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc

from certs.identity import Identity
from hotline import link
from hotline.ids import is_message_id, new_message_id
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, Signer, sha256
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, operator_pb2_grpc
from hotline.validation import validate, validate_envelope
from hotline.wire import timestamp_ns
from server.auth import caller
from server.journal import Entry, Kind
from server.peerlink.status import LinkStatus
from server.store import IN, OUT, DuplicateMessage, Journaled, Store, WrongState, outgoing

log = logging.getLogger("hotline.operator")

Context = grpc.aio.ServicerContext[Any, Any]
WATCH_BUFFER = 10_000


class TokenBucket:
    """Per-operator rate limit on sends (RESOURCE_EXHAUSTED when empty)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, who: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[who] = (tokens, now)
            return False
        self._buckets[who] = (tokens - 1.0, now)
        return True


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises


class OperatorServicer(operator_pb2_grpc.OperatorServiceServicer):
    def __init__(
        self,
        *,
        store: Store,
        signer: Signer,
        enqueue: Callable[[link.Outgoing], None],
        outbound_status: Callable[[], LinkStatus],
        inbound_status: Callable[[], LinkStatus],
        queue_depth: Callable[[], int],
        rate: TokenBucket,
    ) -> None:
        self._store = store
        self._signer = signer
        self._enqueue = enqueue
        self._outbound_status = outbound_status
        self._inbound_status = inbound_status
        self._queue_depth = queue_depth
        self._rate = rate

    @property
    def party(self) -> str:
        return self._store.party

    @property
    def peer_party(self) -> str:
        return self._store.peer_party

    # ------------------------------------------------------------------ sending

    def _fill(self, envelope: envelope_pb2.Envelope, who: Identity) -> None:
        if not envelope.message_id:
            envelope.message_id = new_message_id()
        if not envelope.sender_party:
            envelope.sender_party = self.party
        if not envelope.originator:
            envelope.originator = who.spiffe_id
        if not envelope.HasField("create_time"):
            envelope.create_time.FromNanoseconds(time.time_ns())

    async def _journal_and_queue(
        self,
        context: Context,
        envelope: envelope_pb2.Envelope,
        *,
        acknowledges: str = "",
    ) -> tuple[Journaled | None, DuplicateMessage | None]:
        payload = envelope.SerializeToString()
        signed = self._signer.sign(PAYLOAD_TYPE_ENVELOPE, payload)
        try:
            journaled = await self._store.journal_outbound(
                signed, envelope, acknowledges=acknowledges
            )
        except DuplicateMessage as dup:
            return None, dup
        except WrongState as exc:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        self._enqueue(
            outgoing(signed, envelope.message_id, envelope.precedence, journaled.position)
        )
        return journaled, None

    async def Send(
        self, request: operator_pb2.SendRequest, context: Context
    ) -> operator_pb2.SendResponse:
        who = caller()
        if not self._rate.take(who.spiffe_id):
            await _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{who} is sending faster than {self._rate.rate:g} messages/s "
                f"(burst {self._rate.burst}); retry with backoff",
            )
        if not request.HasField("envelope"):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "envelope: required")
        envelope = envelope_pb2.Envelope()
        envelope.CopyFrom(request.envelope)
        impersonation = ""
        if envelope.sender_party and envelope.sender_party != who.party:
            impersonation = f"sender_party is {envelope.sender_party}, but the caller {who} is of party {who.party}"
        elif envelope.originator and envelope.originator != who.spiffe_id:
            impersonation = f"originator is {envelope.originator}, but the caller is {who}"
        if impersonation:
            await self._store.record_event(
                Kind.SECURITY,
                {"code": "PERMISSION_DENIED", "detail": f"{who} calling Send: {impersonation}"},
            )
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, impersonation)
        problems = []
        if envelope.recipient_party and envelope.recipient_party != self.peer_party:
            problems.append(
                f"envelope.recipient_party: must be the peer {self.peer_party}, "
                f"got {envelope.recipient_party}"
            )
        if envelope.WhichOneof("body") == "acknowledgement":
            problems.append("envelope.acknowledgement: acknowledgements are made with Acknowledge")
        # Validate the envelope as it will travel (after filling the gateway's fields), so a
        # Send never journals what the peer would refuse (an expiry already past, say).
        # Paths are from the request (envelope.…), as the spec's Send errors say.
        self._fill(envelope, who)
        problems += [str(v) for v in validate(envelope, filled=True, prefix="envelope")]
        if problems:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        await self._check_references(envelope, context)
        journaled, dup = await self._journal_and_queue(context, envelope)
        if dup is not None:
            return await self._idempotent(dup, envelope, context)
        assert journaled is not None
        log.debug(
            "journaled %s %s from %s at position %d",
            envelope.message_id,
            envelope.WhichOneof("body"),
            who,
            journaled.position,
        )
        return operator_pb2.SendResponse(
            message_id=journaled.message_id,
            journal_position=journaled.position,
            state=operator_pb2.DELIVERY_STATE_JOURNALED,
            journal_time=timestamp_ns(journaled.journal_time_ns),
            acknowledge_deadline_time=timestamp_ns(journaled.deadline_ns),
        )

    async def _check_references(self, envelope: envelope_pb2.Envelope, context: Context) -> None:
        if envelope.action not in (common_pb2.ACTION_UPDATE, common_pb2.ACTION_CANCEL):
            return
        if not envelope.references:
            return  # the validator has reported it
        target = self._store.message_row(envelope.references[0])
        if target is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"references[0]: no message {envelope.references[0]} in the journal",
            )
        if target["direction"] != OUT:
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"references[0]: {envelope.references[0]} was sent by the peer; only our own messages can be updated or cancelled",
            )

    async def _idempotent(
        self, dup: DuplicateMessage, envelope: envelope_pb2.Envelope, context: Context
    ) -> operator_pb2.SendResponse:
        record = self._store.record(dup.message_id)
        if record is None or record.direction != OUT:
            await _abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"message_id {dup.message_id} was used by the other party",
            )
        original = record.envelope
        probe = envelope_pb2.Envelope()
        probe.CopyFrom(envelope)
        probe.create_time.CopyFrom(original.create_time)  # filled by us if empty on the retry
        if probe != original:
            await _abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"message_id {dup.message_id} was already used for a different envelope",
            )
        return operator_pb2.SendResponse(
            message_id=record.envelope.message_id,
            journal_position=record.journal_position,
            state=record.state,
            journal_time=record.journal_time,
            acknowledge_deadline_time=record.acknowledge_deadline_time,
        )

    async def Acknowledge(
        self, request: operator_pb2.AcknowledgeRequest, context: Context
    ) -> operator_pb2.AcknowledgeResponse:
        who = caller()
        violations = validate(request)
        if violations:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(str(v) for v in violations)
            )
        target = self._store.record(request.message_id)
        if target is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"message_id: no message {request.message_id} in the journal",
            )
        if target.direction != IN:
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.message_id} was sent by this party; only messages received from {self.peer_party} are acknowledged",
            )
        if target.envelope.WhichOneof("body") == "acknowledgement":
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.message_id} is itself an acknowledgement",
            )
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
        violations = validate_envelope(envelope)
        if violations:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(str(v) for v in violations)
            )
        journaled, dup = await self._journal_and_queue(
            context, envelope, acknowledges=original.message_id
        )
        if dup is not None:
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
            await _abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"ack_message_id {dup.message_id} was already used",
            )
        assert journaled is not None
        log.info(
            "%s acknowledged %s (%s)",
            who,
            original.message_id,
            bodies_pb2.AcknowledgementLevel.Name(request.level),
        )
        return operator_pb2.AcknowledgeResponse(
            ack_message_id=envelope.message_id, journal_position=journaled.position
        )

    # ------------------------------------------------------------------ reading

    async def GetMessage(
        self, request: operator_pb2.GetMessageRequest, context: Context
    ) -> operator_pb2.GetMessageResponse:
        if not is_message_id(request.message_id):
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"message_id: not a UUID: {request.message_id!r}",
            )
        record = self._store.record(request.message_id)
        if record is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no message {request.message_id} in the journal",
            )
        return operator_pb2.GetMessageResponse(message=record)

    async def ListMessages(
        self, request: operator_pb2.ListMessagesRequest, context: Context
    ) -> operator_pb2.ListMessagesResponse:
        violations = validate(request)
        if violations:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(str(v) for v in violations)
            )
        where: list[str] = []
        params: list[Any] = []
        if request.direction:
            where.append("m.direction = ?")
            params.append(request.direction)
        for column, values in (
            ("m.body_type", request.body_types),
            ("m.precedence", request.precedences),
            ("m.state", request.states),
        ):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if request.status:
            where.append("m.status = ?")
            params.append(request.status)
        if request.HasField("start_time"):
            where.append("m.journal_time_ns >= ?")
            params.append(request.start_time.ToNanoseconds())
        if request.HasField("end_time"):
            if (
                request.HasField("start_time")
                and request.end_time.ToNanoseconds() <= request.start_time.ToNanoseconds()
            ):
                await _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "end_time: must be after start_time"
                )
            where.append("m.journal_time_ns < ?")
            params.append(request.end_time.ToNanoseconds())
        if request.overdue_only:
            where.append("m.escalated = 1 AND m.state IN (?, ?)")
            params.extend(
                [operator_pb2.DELIVERY_STATE_JOURNALED, operator_pb2.DELIVERY_STATE_DELIVERED]
            )
        filters = request.SerializeToString(deterministic=True)
        before = 2**62
        if request.page_token:
            before = await self._decode_token(request, filters, context)
        size = request.page_size or 100
        records = self._store.list_records(
            before_position=before, limit=size + 1, where=where, params=params
        )
        token = ""
        if len(records) > size:
            records = records[:size]
            token = _encode_token(records[-1].journal_position, filters)
        return operator_pb2.ListMessagesResponse(messages=records, next_page_token=token)

    async def _decode_token(
        self, request: operator_pb2.ListMessagesRequest, filters: bytes, context: Context
    ) -> int:
        probe = operator_pb2.ListMessagesRequest()
        probe.CopyFrom(request)
        probe.page_token = ""
        probe.page_size = 0
        expected = sha256(probe.SerializeToString(deterministic=True)).hex()[:16]
        try:
            data = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
            position, digest = int(data["before"]), str(data["filters"])
        except (ValueError, KeyError, TypeError):
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_token: not a token this gateway issued",
            )
        if digest != expected:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_token: was issued for other filters",
            )
        return position

    async def GetLinkStatus(
        self, request: operator_pb2.GetLinkStatusRequest, context: Context
    ) -> operator_pb2.GetLinkStatusResponse:
        out, inn = self._outbound_status(), self._inbound_status()
        return operator_pb2.GetLinkStatusResponse(
            outbound=_status(out, self._queue_depth()),
            inbound=_status(inn, 0),
            overdue_count=self._store.overdue_count(),
            party=self.party,
            peer_party=self.peer_party,
        )

    async def Watch(
        self, request: operator_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[operator_pb2.WatchResponse]:
        violations = validate(request)
        if violations:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(str(v) for v in violations)
            )
        head = self._store.journal.head[0]
        if request.after_cursor > head:
            await _abort(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                f"after_cursor {request.after_cursor} is beyond the end of the journal ({head})",
            )
        kinds = set(request.kinds)
        live: asyncio.Queue[list[Entry]] = asyncio.Queue()
        overflow = False

        def on_commit(entries: list[Entry]) -> None:
            nonlocal overflow
            if live.qsize() >= WATCH_BUFFER:
                overflow = True
                return
            live.put_nowait(entries)

        unsubscribe = self._store.journal.subscribe(on_commit)
        try:
            cursor = request.after_cursor
            while True:  # replay what is already journaled
                batch = self._store.journal.entries(after=cursor, limit=500)
                if not batch:
                    break
                for entry in batch:
                    cursor = entry.position
                    event = self._store.event_for(entry)
                    if event is not None and (not kinds or event.kind in kinds):
                        yield operator_pb2.WatchResponse(event=event)
            while True:  # then follow live commits
                entries = await live.get()
                if overflow:
                    await _abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"the watcher fell more than {WATCH_BUFFER} commits behind; resume from cursor {cursor}",
                    )
                for entry in entries:
                    if entry.position <= cursor:
                        continue
                    cursor = entry.position
                    event = self._store.event_for(entry)
                    if event is not None and (not kinds or event.kind in kinds):
                        yield operator_pb2.WatchResponse(event=event)
        finally:
            unsubscribe()


def _status(state: LinkStatus, depth: int) -> operator_pb2.LinkStatus:
    status = operator_pb2.LinkStatus(
        up=state.up, queue_depth=depth, last_sequence=state.last_sequence, detail=state.detail
    )
    if state.since:
        status.since_time.FromNanoseconds(int(state.since * 1e9))
    status.rtt.FromNanoseconds(int(state.rtt * 1e9))
    status.clock_offset.FromNanoseconds(int(state.clock_offset * 1e9))
    return status


def _encode_token(before: int, filters: bytes) -> str:
    probe = operator_pb2.ListMessagesRequest()
    probe.ParseFromString(filters)
    probe.page_token = ""
    probe.page_size = 0
    digest = sha256(probe.SerializeToString(deterministic=True)).hex()[:16]
    return base64.urlsafe_b64encode(
        json.dumps({"before": before, "filters": digest}).encode()
    ).decode()


def _language_of(request: operator_pb2.AcknowledgeRequest) -> str:
    for text in (request.remarks, request.reason):
        for variant in text.variants:
            if variant.kind == common_pb2.TRANSLATION_KIND_ORIGINAL:
                return variant.language
    return ""
