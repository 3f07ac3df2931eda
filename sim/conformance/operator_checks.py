"""The `operator` role's checks: the suite is one of the target party's watch officers, calling
the target's `OperatorService` with raw stubs (so every status code is the target's own, not
the operator SDK's retries and translations).

To acknowledge, an operator needs an inbound message: when the PKI holds the other party's
gateway and signing material, the suite first delivers one over the target's PeerLink as that
party (`operator.ack.*` are skipped otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from certs.pki import load_certificate
from hotline.errors import SignatureError
from hotline.ids import new_message_id
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, KeyRing
from hotline.transport import credentials, secure_channel
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, operator_pb2_grpc
from sim.conformance.examples import Adapter, as_operator_would_send, free_text
from sim.conformance.material import Material
from sim.conformance.registry import Failed, Items, Skipped, check, expect

SEND = "OperatorService: Send"
FILLED_BY_GATEWAY = ("message_id", "sender_party", "originator", "create_time")
OWN_IDENTITY = ("sender_party", "originator")  # set to another's: PERMISSION_DENIED first


class OperatorSession:
    def __init__(
        self, material: Material, address: str, *, operator: str | None, timeout: float
    ) -> None:
        self.material = material
        self.address = address
        self.timeout = timeout
        self.target = material.target
        self.peer = material.us
        self.name, cert, key, ca = material.operator_files(operator)
        self.channel = secure_channel(address, credentials(cert, key, ca), server_party=self.target)
        self.stub = operator_pb2_grpc.OperatorServiceStub(self.channel)
        self.identity = f"spiffe://{self.target.lower()}.hotline/operator/{self.name}"
        self.examples: tuple[list[Any], list[Any]] = ([], [])
        self.items = Items()
        self.sent: list[tuple[envelope_pb2.Envelope, operator_pb2.SendResponse]] = []
        self.inbound: str | None = None  # an inbound message id we delivered, to acknowledge

    async def close(self) -> None:
        await self.channel.close()

    async def call(self, method: str, request: Any) -> Any:
        """A unary call; AioRpcError is left to the caller."""
        fn = getattr(self.stub, method)
        return await fn(request, timeout=self.timeout)

    async def refused(self, method: str, request: Any) -> grpc.aio.AioRpcError | None:
        """The call's error, or None if it succeeded."""
        try:
            await self.call(method, request)
        except grpc.aio.AioRpcError as exc:
            return exc
        return None

    async def send(self, envelope: envelope_pb2.Envelope) -> operator_pb2.SendResponse:
        try:
            response: operator_pb2.SendResponse = await self.call(
                "Send", operator_pb2.SendRequest(envelope=envelope)
            )
        except grpc.aio.AioRpcError as exc:
            raise Failed(f"Send refused a valid message: {_code(exc)}") from None
        self.sent.append((envelope, response))
        return response

    def message(self, text: str) -> envelope_pb2.Envelope:
        env = free_text(self.target, self.peer, text)
        env.ClearField("originator")
        return env


def _code(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name} {exc.details()!r}"


async def _expect_code(
    s: OperatorSession, method: str, request: Any, code: grpc.StatusCode, why: str
) -> grpc.aio.AioRpcError:
    exc = await s.refused(method, request)
    expect(exc is not None, f"{why}: the call succeeded; the spec says {code.name}")
    assert exc is not None
    expect(exc.code() == code, f"{why}: {_code(exc)}; the spec says {code.name}")
    return exc


# ---------------------------------------------------------------------------- send


@check(
    "operator.send.valid-examples",
    "Send journals every valid golden example (an acknowledgement body aside) and answers "
    "JOURNALED with its position",
    spec=SEND,
    musts=("send-journals-valid", "send-returns-journaled"),
)
async def send_valid(s: OperatorSession) -> str:
    valid = [e for e in s.examples[0] if "\nacknowledgement {" not in e.text]
    adapter = Adapter(s.target, s.peer)
    adapter.reserve(s.examples[0])
    for example in sorted(valid, key=lambda e: "references:" in e.text):
        envelope = as_operator_would_send(adapter.adapt(example))
        try:
            response = await s.send(envelope)
        except Failed as exc:
            s.items.fail(example.name, str(exc))
            continue
        problems = []
        if response.message_id != envelope.message_id:
            problems.append(f"answered id {response.message_id}")
        if response.journal_position < 1:
            problems.append(f"journal_position {response.journal_position}")
        if response.state != operator_pb2.DELIVERY_STATE_JOURNALED:
            problems.append(f"state {operator_pb2.DeliveryState.Name(response.state)}")
        if not response.HasField("journal_time"):
            problems.append("no journal_time")
        if problems:
            s.items.fail(example.name, ", ".join(problems))
        else:
            s.items.ok(example.name, f"position {response.journal_position}")
    return s.items.verdict("journaled")


@check(
    "operator.send.idempotent",
    "Send retried with the same message id and envelope returns the original response",
    spec=SEND,
    musts=("send-idempotent-by-message-id",),
)
async def send_idempotent(s: OperatorSession) -> str:
    envelope = s.message("idempotent retry")
    first = await s.send(envelope)
    again = await s.send(envelope)
    expect(
        (again.message_id, again.journal_position) == (first.message_id, first.journal_position),
        f"the retry answered {again.message_id} at {again.journal_position}, the first "
        f"{first.message_id} at {first.journal_position}",
    )
    return f"{first.message_id} at position {first.journal_position}, twice"


@check(
    "operator.send.already-exists",
    "Send with a used message id and another envelope fails ALREADY_EXISTS",
    spec=SEND,
    musts=("send-reused-id-already-exists",),
)
async def send_already_exists(s: OperatorSession) -> str:
    envelope = s.message("the original")
    await s.send(envelope)
    other = s.message("another text under the same id")
    other.message_id = envelope.message_id
    exc = await _expect_code(
        s,
        "Send",
        operator_pb2.SendRequest(envelope=other),
        grpc.StatusCode.ALREADY_EXISTS,
        "a reused message id",
    )
    return _code(exc)


@check(
    "operator.send.invalid-examples",
    "Send refuses every invalid golden example INVALID_ARGUMENT, naming each broken field",
    spec="Status codes",
    musts=("send-invalid-argument-lists-violations",),
)
async def send_invalid(s: OperatorSession) -> str:
    adapter = Adapter(s.target, s.peer)
    adapter.reserve(s.examples[0])
    for example in s.examples[1]:
        envelope = as_operator_would_send(adapter.adapt(example))
        paths = example.paths
        if all(p in FILLED_BY_GATEWAY and not _set(envelope, p) for p in paths):
            continue  # the gateway fills what the example left empty: valid at Send time
        exc = await s.refused("Send", operator_pb2.SendRequest(envelope=envelope))
        if exc is None:
            s.items.fail(example.name, "journaled")
            continue
        own = any(p in OWN_IDENTITY for p in paths)
        if own and exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            s.items.ok(example.name, "PERMISSION_DENIED (sets another's identity)")
            continue
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            s.items.fail(example.name, _code(exc))
            continue
        details = exc.details() or ""
        missing = [p for p in paths if f"envelope.{p}: " not in details]
        if missing:
            s.items.fail(example.name, f"status message does not name {missing}: {details!r}")
        else:
            s.items.ok(example.name, "INVALID_ARGUMENT")
    return s.items.verdict("refused, naming the broken fields")


def _set(envelope: envelope_pb2.Envelope, path: str) -> bool:
    if path == "create_time":
        return envelope.HasField("create_time")
    return bool(getattr(envelope, path))


@check(
    "operator.send.refusals",
    "Send refuses an acknowledgement body and an unknown update INVALID_ARGUMENT / NOT_FOUND, "
    "another operator's originator PERMISSION_DENIED",
    spec=SEND,
    musts=(
        "send-acknowledgement-body-invalid-argument",
        "send-update-unknown-reference-not-found",
        "send-foreign-originator-permission-denied",
    ),
)
async def send_refusals(s: OperatorSession) -> str:
    shown = []
    ack = s.message("an acknowledgement through Send")
    ack.ClearField("free_text")
    ack.references.append(new_message_id())
    ack.acknowledgement.acknowledged_message_id = ack.references[0]
    ack.acknowledgement.level = bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
    ack.acknowledgement.responder = s.identity
    exc = await _expect_code(
        s,
        "Send",
        operator_pb2.SendRequest(envelope=ack),
        grpc.StatusCode.INVALID_ARGUMENT,
        "an acknowledgement body",
    )
    shown.append(exc.code().name)
    update = s.message("an update of nothing")
    update.action = common_pb2.ACTION_UPDATE
    update.references.append(new_message_id())
    exc = await _expect_code(
        s,
        "Send",
        operator_pb2.SendRequest(envelope=update),
        grpc.StatusCode.NOT_FOUND,
        "an UPDATE of an unknown message",
    )
    shown.append(exc.code().name)
    foreign = s.message("in another officer's name")
    foreign.originator = f"spiffe://{s.target.lower()}.hotline/operator/not-{s.name}"
    exc = await _expect_code(
        s,
        "Send",
        operator_pb2.SendRequest(envelope=foreign),
        grpc.StatusCode.PERMISSION_DENIED,
        "another operator's originator",
    )
    shown.append(exc.code().name)
    return ", ".join(shown)


# ---------------------------------------------------------------------------- reading


@check(
    "operator.get.message",
    "GetMessage returns a sent message as journaled, its signed bytes verifiable offline",
    spec="OperatorService: GetMessage",
    musts=("get-message-record", "record-signed-envelope-verifies"),
)
async def get_message(s: OperatorSession) -> str:
    envelope = s.message("read it back")
    sent = await s.send(envelope)
    response = await s.call(
        "GetMessage", operator_pb2.GetMessageRequest(message_id=sent.message_id)
    )
    record = response.message
    expect(
        record.journal_position == sent.journal_position,
        f"position {record.journal_position}, Send said {sent.journal_position}",
    )
    expect(record.direction == operator_pb2.DIRECTION_OUTBOUND, "direction is not OUTBOUND")
    expect(
        record.envelope.originator == s.identity,
        f"originator {record.envelope.originator!r}, the caller is {s.identity}",
    )
    expect(record.envelope.sender_party == s.target, "sender_party not filled with ours")
    ring = KeyRing([load_certificate(s.material.target_paths.ca_cert)])
    with contextlib.suppress(Exception):
        ring.add_certificate(load_certificate(s.material.target_paths.signing_cert))
    try:
        payload = ring.verify(
            record.signed_envelope, payload_type=PAYLOAD_TYPE_ENVELOPE, party=s.target
        )
    except SignatureError as exc:
        raise Failed(f"signed_envelope does not verify: {exc}") from None
    parsed = envelope_pb2.Envelope()
    parsed.ParseFromString(payload)
    expect(parsed == record.envelope, "envelope differs from its signed bytes")
    expect(parsed.free_text == envelope.free_text, "the journaled body is not the one sent")
    return f"{sent.message_id}: OUTBOUND at {record.journal_position}, signed by {s.target}"


@check(
    "operator.get.errors",
    "GetMessage answers NOT_FOUND for an unknown id and INVALID_ARGUMENT for a malformed one",
    spec="OperatorService: GetMessage",
    musts=("get-unknown-not-found", "get-malformed-invalid-argument"),
)
async def get_errors(s: OperatorSession) -> str:
    a = await _expect_code(
        s,
        "GetMessage",
        operator_pb2.GetMessageRequest(message_id=new_message_id()),
        grpc.StatusCode.NOT_FOUND,
        "an unknown id",
    )
    b = await _expect_code(
        s,
        "GetMessage",
        operator_pb2.GetMessageRequest(message_id="not-an-id"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "a malformed id",
    )
    return f"{a.code().name}, {b.code().name}"


@check(
    "operator.watch.cursor",
    "Watch from a cursor replays the journal's events after it in order, then live ones",
    spec="OperatorService: Watch",
    musts=("watch-resumes-after-cursor", "watch-cursor-increasing", "watch-live-events"),
)
async def watch_cursor(s: OperatorSession) -> str:
    first = await s.send(s.message("watch: already journaled"))
    request = operator_pb2.WatchRequest(
        after_cursor=first.journal_position - 1, kinds=[operator_pb2.EVENT_KIND_MESSAGE_SENT]
    )
    call = s.stub.Watch(request)
    seen: list[operator_pb2.Event] = []
    live: operator_pb2.SendResponse | None = None
    try:
        async with asyncio.timeout(s.timeout * 2):
            async for response in call:
                seen.extend(response.events)
                ids = [e.message_id for e in seen]
                if live is None and first.message_id in ids:
                    live = await s.send(s.message("watch: live"))
                if live is not None and live.message_id in ids:
                    break
    except TimeoutError:
        raise Failed(
            f"Watch from cursor {request.after_cursor} did not show "
            f"{'the live message' if live else 'the journaled one'} (saw {len(seen)} events)"
        ) from None
    finally:
        call.cancel()
    cursors = [e.cursor for e in seen]
    expect(cursors == sorted(set(cursors)), f"cursors not strictly increasing: {cursors[:8]}")
    expect(cursors[0] > request.after_cursor, f"an event at {cursors[0]} <= after_cursor")
    expect(
        all(e.kind == operator_pb2.EVENT_KIND_MESSAGE_SENT for e in seen),
        "an event of a kind not asked for",
    )
    event = next(e for e in seen if e.message_id == first.message_id)
    expect(
        event.cursor == first.journal_position,
        f"the MESSAGE_SENT event's cursor is {event.cursor}, Send said {first.journal_position}",
    )
    return f"{len(seen)} MESSAGE_SENT events from cursor {request.after_cursor}, the last live"


@check(
    "operator.watch.errors",
    "Watch refuses a cursor beyond the journal OUT_OF_RANGE and an unspecified kind "
    "INVALID_ARGUMENT",
    spec="OperatorService: Watch",
    musts=("watch-cursor-beyond-out-of-range", "watch-unspecified-kind-invalid-argument"),
)
async def watch_errors(s: OperatorSession) -> str:
    codes = []
    for request, code in (
        (operator_pb2.WatchRequest(after_cursor=2**62), grpc.StatusCode.OUT_OF_RANGE),
        (
            operator_pb2.WatchRequest(kinds=[operator_pb2.EVENT_KIND_UNSPECIFIED]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ):
        call = s.stub.Watch(request, timeout=s.timeout)
        try:
            async for _ in call:
                break
            got = None
        except grpc.aio.AioRpcError as exc:
            got = exc
        finally:
            call.cancel()
        expect(got is not None, f"Watch({request}) streamed events; the spec says {code.name}")
        assert got is not None
        expect(
            got.code() == code,
            f"Watch({str(request).strip()}): {_code(got)}; the spec says {code.name}",
        )
        codes.append(code.name)
    return ", ".join(codes)


@check(
    "operator.list.pagination",
    "ListMessages pages newest first with tokens, no message twice, and refuses bad pages",
    spec="OperatorService: ListMessages",
    musts=("list-newest-first", "list-page-token", "list-bad-page-invalid-argument"),
)
async def list_pagination(s: OperatorSession) -> str:
    ours = [await s.send(s.message(f"list {i}")) for i in range(5)]
    wanted = {r.message_id for r in ours}
    request = operator_pb2.ListMessagesRequest(
        page_size=2, direction=operator_pb2.DIRECTION_OUTBOUND
    )
    positions: list[int] = []
    found: set[str] = set()
    pages = 0
    token = ""
    while pages < 50:
        request.page_token = token
        response = await s.call("ListMessages", request)
        pages += 1
        expect(len(response.messages) <= 2, f"a page of {len(response.messages)} for page_size 2")
        for record in response.messages:
            positions.append(record.journal_position)
            expect(record.direction == operator_pb2.DIRECTION_OUTBOUND, "an inbound message")
            found.add(record.envelope.message_id)
        token = response.next_page_token
        if not token or wanted <= found:
            break
    expect(wanted <= found, f"{len(wanted - found)} of our 5 messages not listed in {pages} pages")
    expect(
        positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions),
        f"positions not strictly descending across pages: {positions[:10]}",
    )
    bad = await _expect_code(
        s,
        "ListMessages",
        operator_pb2.ListMessagesRequest(page_size=5000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size 5000",
    )
    return f"{pages} pages of 2, newest first; page_size 5000: {bad.code().name}"


# ---------------------------------------------------------------------------- acknowledge


async def _inbound(s: OperatorSession) -> str:
    """An inbound message at the target, delivered by the suite over its PeerLink."""
    if s.inbound is not None:
        return s.inbound
    if not s.material.has_peer_material():
        raise Skipped(
            f"the PKI holds no {s.peer} gateway and signing material to deliver an "
            "inbound message with"
        )
    from sim.conformance.pushlink import PeerSession

    peer = PeerSession(s.material, s.address, timeout=s.timeout)
    try:
        opened = await peer.open()
        envelope = free_text(s.peer, s.target, "to be acknowledged")
        settled = await peer.deliver(opened.stream, [peer.sign(envelope)], [envelope.message_id])
        expect(
            settled.receipt_item(settled.first) is not None,
            "the target rejected the inbound message to acknowledge",
        )
    finally:
        await peer.close()
    s.inbound = envelope.message_id
    return envelope.message_id


@check(
    "operator.ack.acknowledge",
    "Acknowledge journals an acknowledgement, idempotent by ack_message_id, and the message "
    "becomes ACKNOWLEDGED",
    spec="OperatorService: Acknowledge",
    musts=("acknowledge-journals", "acknowledge-idempotent", "acknowledged-state"),
)
async def acknowledge(s: OperatorSession) -> str:
    inbound = await _inbound(s)
    request = operator_pb2.AcknowledgeRequest(
        message_id=inbound,
        level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER,
        ack_message_id=new_message_id(),
    )
    first = await s.call("Acknowledge", request)
    expect(
        first.ack_message_id == request.ack_message_id,
        f"answered ack id {first.ack_message_id}, asked {request.ack_message_id}",
    )
    expect(first.journal_position >= 1, "no journal_position")
    again = await s.call("Acknowledge", request)
    expect(again.journal_position == first.journal_position, "the retry journaled again")
    record = (
        await s.call("GetMessage", operator_pb2.GetMessageRequest(message_id=inbound))
    ).message
    expect(
        record.direction == operator_pb2.DIRECTION_INBOUND, "the delivered message is not INBOUND"
    )
    expect(
        record.state == operator_pb2.DELIVERY_STATE_ACKNOWLEDGED,
        f"state {operator_pb2.DeliveryState.Name(record.state)} after the acknowledgement",
    )
    expect(
        record.acknowledgement.level == bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER,
        "the record's acknowledgement is not ROGER",
    )
    ack = (
        await s.call("GetMessage", operator_pb2.GetMessageRequest(message_id=first.ack_message_id))
    ).message
    body = ack.envelope.acknowledgement
    expect(ack.envelope.references[:1] == [inbound], "the acknowledgement does not reference it")
    expect(
        body.responder == s.identity, f"responder {body.responder!r}, the caller is {s.identity}"
    )
    return f"{inbound} ACKNOWLEDGED (ROGER) by {first.ack_message_id}, retry idempotent"


@check(
    "operator.ack.errors",
    "Acknowledge refuses a reused ack id, an outbound or unknown message, and UNABLE without "
    "a reason with the spec's codes",
    spec="OperatorService: Acknowledge",
    musts=(
        "acknowledge-reused-id-already-exists",
        "acknowledge-outbound-failed-precondition",
        "acknowledge-unknown-not-found",
        "acknowledge-unable-needs-reason",
    ),
)
async def acknowledge_errors(s: OperatorSession) -> str:
    inbound = await _inbound(s)
    used = operator_pb2.AcknowledgeRequest(
        message_id=inbound,
        level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_WILCO,
        ack_message_id=new_message_id(),
    )
    await s.call("Acknowledge", used)
    outbound = await s.send(s.message("not ours to acknowledge"))
    cases = [
        (
            operator_pb2.AcknowledgeRequest(
                message_id=inbound,
                level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER,
                ack_message_id=used.ack_message_id,
            ),
            grpc.StatusCode.ALREADY_EXISTS,
            "a reused ack_message_id",
        ),
        (
            operator_pb2.AcknowledgeRequest(
                message_id=outbound.message_id, level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "an outbound message",
        ),
        (
            operator_pb2.AcknowledgeRequest(
                message_id=new_message_id(), level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
            ),
            grpc.StatusCode.NOT_FOUND,
            "an unknown message",
        ),
        (
            operator_pb2.AcknowledgeRequest(
                message_id=inbound, level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNABLE
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNABLE without a reason",
        ),
    ]
    for request, code, why in cases:
        exc = await s.refused("Acknowledge", request)
        if exc is None:
            s.items.fail(why, f"succeeded; the spec says {code.name}")
        elif exc.code() != code:
            s.items.fail(why, f"{_code(exc)}; the spec says {code.name}")
        else:
            s.items.ok(why, code.name)
    return s.items.verdict("refused with the spec's code")


# ---------------------------------------------------------------------------- link, authz


@check(
    "operator.link-status",
    "GetLinkStatus names both parties and both directions",
    spec="OperatorService: GetLinkStatus",
    musts=("link-status-parties",),
)
async def link_status(s: OperatorSession) -> str:
    response = await s.call("GetLinkStatus", operator_pb2.GetLinkStatusRequest())
    expect(
        (response.party, response.peer_party) == (s.target, s.peer),
        f"parties {response.party}/{response.peer_party}, expected {s.target}/{s.peer}",
    )
    expect(
        response.HasField("outbound") and response.HasField("inbound"),
        "outbound or inbound status missing",
    )
    if s.inbound is not None:
        expect(
            response.inbound.last_sequence >= 1,
            "inbound last_sequence is 0 although we delivered a message",
        )
    return (
        f"{response.party}->{response.peer_party}: outbound "
        f"{'up' if response.outbound.up else 'down'}, inbound last_sequence "
        f"{response.inbound.last_sequence}, overdue {response.overdue_count}"
    )


@check(
    "operator.authz.peer-gateway",
    "the peer gateway may not call the Operator service: PERMISSION_DENIED",
    spec="Status codes",
    musts=("operator-service-own-operators-only",),
)
async def authz_peer_gateway(s: OperatorSession) -> str:
    if not s.material.has_peer_material():
        raise Skipped(f"the PKI holds no {s.peer} gateway certificate")
    cert, key, ca = s.material.gateway_files()
    channel = secure_channel(s.address, credentials(cert, key, ca), server_party=s.target)
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        try:
            await stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest(), timeout=s.timeout)
        except grpc.aio.AioRpcError as exc:
            expect(
                exc.code() == grpc.StatusCode.PERMISSION_DENIED,
                f"{_code(exc)}; the spec says PERMISSION_DENIED",
            )
            return f"the {s.peer} gateway: {_code(exc)}"
        raise Failed(f"the {s.peer} gateway was answered")
    finally:
        await channel.close()
