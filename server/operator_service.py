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
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc

from hotline.ids import is_message_id
from hotline.signing import sha256
from hotline.v1 import operator_pb2, operator_pb2_grpc
from hotline.validation import validate
from server.auth import caller
from server.errors import GatewayError
from server.journal import Entry, Kind
from server.peerlink.status import LinkStatus
from server.service import GatewayService, violations_text
from server.store import EVENT_KINDS, MessageFilter, Store

log = logging.getLogger("hotline.operator")

Context = grpc.aio.ServicerContext[Any, Any]
WATCH_BUFFER = 10_000
FIRST_PAGE = 2**62  # `before` of the first page: above every journal position


# The one table from the gateway's refusals to gRPC status codes (client.errors inverts it).
STATUS: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises


async def _refuse(context: Context, error: GatewayError) -> NoReturn:
    await _abort(context, STATUS[error.status], str(error))


def _results(
    outcome: Sequence[operator_pb2.SendResponse | GatewayError],
) -> list[operator_pb2.SendResult]:
    results = []
    for result in outcome:
        if isinstance(result, GatewayError):
            code = STATUS[result.status].value[0]
            error = operator_pb2.SendError(code=code, message=str(result))
            results.append(operator_pb2.SendResult(error=error))
        else:
            results.append(operator_pb2.SendResult(sent=result))
    return results


class OperatorServicer(operator_pb2_grpc.OperatorServiceServicer):
    """The gRPC adapter: the domain steps are `server.service.GatewayService`'s."""

    def __init__(
        self,
        *,
        store: Store,
        service: GatewayService,
        outbound_status: Callable[[], LinkStatus],
        inbound_status: Callable[[], LinkStatus],
        queue_depth: Callable[[], int],
    ) -> None:
        self._store = store
        self._service = service
        self._outbound_status = outbound_status
        self._inbound_status = inbound_status
        self._queue_depth = queue_depth

    @property
    def party(self) -> str:
        return self._store.party

    @property
    def peer_party(self) -> str:
        return self._store.peer_party

    # ------------------------------------------------------------------ sending

    async def Send(
        self, request: operator_pb2.SendRequest, context: Context
    ) -> operator_pb2.SendResponse:
        if not request.HasField("envelope"):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "envelope: required")
        try:
            [result] = await self._service.submit([request.envelope], caller())
        except GatewayError as exc:
            await _refuse(context, exc)
        if isinstance(result, GatewayError):
            await _refuse(context, result)
        return result

    async def SendBatch(
        self, request: operator_pb2.SendBatchRequest, context: Context
    ) -> operator_pb2.SendBatchResponse:
        try:
            results = await self._service.submit(request.envelopes, caller())
        except GatewayError as exc:
            await _refuse(context, exc)
        return operator_pb2.SendBatchResponse(results=_results(results))

    async def SendStream(
        self, request_iterator: AsyncIterator[operator_pb2.SendStreamRequest], context: Context
    ) -> AsyncIterator[operator_pb2.SendStreamResponse]:
        who = caller()
        async for request in request_iterator:
            envelopes = request.envelopes
            try:
                outcome: Sequence[
                    operator_pb2.SendResponse | GatewayError
                ] = await self._service.submit(envelopes, who)
            except GatewayError as exc:  # the whole request refused: the stream goes on
                outcome = [exc] * max(1, len(envelopes))
            yield operator_pb2.SendStreamResponse(results=_results(outcome))

    async def Acknowledge(
        self, request: operator_pb2.AcknowledgeRequest, context: Context
    ) -> operator_pb2.AcknowledgeResponse:
        try:
            return await self._service.acknowledge(request, caller())
        except GatewayError as exc:
            await _refuse(context, exc)

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
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, violations_text(violations))
        if (
            request.HasField("start_time")
            and request.HasField("end_time")
            and request.end_time.ToNanoseconds() <= request.start_time.ToNanoseconds()
        ):
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "end_time: must be after start_time"
            )
        where = MessageFilter(
            direction=request.direction,
            body_types=tuple(request.body_types),
            precedences=tuple(request.precedences),
            states=tuple(request.states),
            status=request.status,
            start_ns=request.start_time.ToNanoseconds() if request.HasField("start_time") else None,
            end_ns=request.end_time.ToNanoseconds() if request.HasField("end_time") else None,
            overdue_only=request.overdue_only,
        )
        filters = request.SerializeToString(deterministic=True)
        before = FIRST_PAGE
        if request.page_token:
            before = await self._decode_token(request, filters, context)
        size = request.page_size or 100
        records = self._store.list_records(where, before_position=before, limit=size + 1)
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
            position, digest = data["before"], str(data["filters"])
        except (ValueError, KeyError, TypeError, RecursionError):
            position, digest = None, ""
        # a journal position as this gateway issues them, never a number SQLite cannot hold
        if type(position) is not int or not 1 <= position <= FIRST_PAGE:
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
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, violations_text(violations))
        head = self._store.journal.head[0]
        if request.after_cursor > head:
            await _abort(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                f"after_cursor {request.after_cursor} is beyond the end of the journal ({head})",
            )
        kinds = set(request.kinds)
        originators = frozenset(request.originators)
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
                cursor = batch[-1].position
                for response in _responses(self._store, batch, kinds, originators):
                    yield response
            while True:  # then follow live commits: one response per commit (and kinds)
                entries = await live.get()
                if overflow:
                    await _abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"the watcher fell more than {WATCH_BUFFER} commits behind; resume from cursor {cursor}",
                    )
                fresh = [e for e in entries if e.position > cursor]
                if not fresh:
                    continue
                cursor = fresh[-1].position
                for response in _responses(self._store, fresh, kinds, originators):
                    yield response
        finally:
            unsubscribe()


WATCH_EVENTS_PER_RESPONSE = 1024


def _responses(
    store: Store,
    entries: list[Entry],
    kinds: set[operator_pb2.EventKind.ValueType],
    originators: frozenset[str] = frozenset(),
) -> list[operator_pb2.WatchResponse]:
    """The events of these entries a watcher of `kinds` (and, if any, `originators`) sees, at
    most 1,024 per response.

    Kinds are checked on the entry first, so a filtered watcher builds nothing it drops (an
    inbound acknowledgement is a MESSAGE_IN entry whose event is MESSAGE_ACKNOWLEDGED). With
    `originators`, a message event passes only when its message's originator is one of them;
    events about no message pass (WatchRequest.originators).
    """
    wanted = [
        e
        for e in entries
        if (kind := EVENT_KINDS.get(e.kind)) is not None
        and (
            not kinds
            or kind in kinds
            or (e.kind is Kind.MESSAGE_IN and operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED in kinds)
        )
    ]
    events = [ev for e in wanted if (ev := store.event_for(e)) is not None]
    if kinds:
        events = [ev for ev in events if ev.kind in kinds]
    if originators:
        events = [
            ev
            for ev in events
            if not ev.message_id or ev.message.envelope.originator in originators
        ]
    return [
        operator_pb2.WatchResponse(events=events[i : i + WATCH_EVENTS_PER_RESPONSE])
        for i in range(0, len(events), WATCH_EVENTS_PER_RESPONSE)
    ]


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
