"""The suite's dialling end of a peer link: Push streams it drives frame by frame.

The suite plays the other party's gateway, but unlike a gateway it must be able to break the
protocol on purpose (a gap in the sequences, a second Hello, a bad signature), so it does not
run `hotline.link.OutboundLink`; it writes frames itself and checks every answer with the
protocol core: `hotline.wire` verifies the Welcome (signing certificates, signature) and each
batch receipt (signature, parties, every sequence settled once), and `verify_settlement` adds
what only the sender can check (the range, order, message ids and digests of what it sent).

    session = PeerSession(material, address, timeout=10)
    opened = await session.open()            # Hello -> verified Welcome (raises Failed)
    settled = await session.deliver(opened.stream, [signed, ...])
    code, details = await opened.stream.ended()
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from hotline import PROTOCOL_VERSION, link, wire
from hotline.errors import RemoteProtocolError
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, Signer, sha256
from hotline.transport import credentials, secure_channel
from hotline.v1 import common_pb2, envelope_pb2, peer_link_pb2, peer_link_pb2_grpc
from sim.conformance.examples import DEFAULT_DIR
from sim.conformance.material import Material
from sim.conformance.registry import Failed, Items, expect

Call = Any  # grpc.aio.StreamStreamCall[PushRequest, PushResponse]


@dataclass
class Ended:
    code: grpc.StatusCode
    details: str
    frames: list[str] = field(default_factory=list)  # frames read before the end (kinds)

    def describe(self) -> str:
        return f"{self.code.name} {self.details!r}"


class PushStream:
    """One `Push` call. Pings from the target are answered with Pongs as they are read."""

    def __init__(self, call: Call, timeout: float) -> None:
        self.call = call
        self.timeout = timeout
        self.pongs: list[peer_link_pb2.Pong] = []
        self.end: Ended | None = None

    async def send(self, request: peer_link_pb2.PushRequest) -> None:
        try:
            await self.call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            raise Failed(f"the target closed the stream while we wrote: {_status(exc)}") from None

    async def read(self, timeout: float | None = None) -> peer_link_pb2.PushResponse | None:
        """The next frame other than a heartbeat, or None once the stream has ended (`end`)."""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while True:
                frame = await self._next()
                if frame is None or frame.WhichOneof("frame") != "pong":
                    return frame

    async def _next(self) -> peer_link_pb2.PushResponse | None:
        """The next frame other than a Ping (answered here; a Pong is also kept in `pongs`)."""
        if self.end is not None:
            return None
        try:
            while True:
                frame = await self.call.read()
                if frame is grpc.aio.EOF:
                    self.end = Ended(await self.call.code(), await self.call.details() or "")
                    return None
                assert isinstance(frame, peer_link_pb2.PushResponse)
                which = frame.WhichOneof("frame")
                if which == "ping":
                    await self._pong(frame.ping)
                    continue
                if which == "pong":
                    self.pongs.append(frame.pong)
                return frame
        except grpc.aio.AioRpcError as exc:
            self.end = Ended(exc.code(), exc.details() or "")
            return None

    async def _pong(self, ping: peer_link_pb2.Ping) -> None:
        now = wire.timestamp_ns(_now_ns())
        pong = peer_link_pb2.Pong(
            nonce=ping.nonce, origin_time=ping.transmit_time, receive_time=now, transmit_time=now
        )
        with contextlib.suppress(Exception):
            await self.call.write(peer_link_pb2.PushRequest(pong=pong))

    async def expect_frame(self, kind: str, what: str) -> peer_link_pb2.PushResponse:
        """The next frame, which must be `kind`; fails naming `what` was awaited."""
        try:
            frame = await self.read()
        except TimeoutError:
            raise Failed(f"{what} did not come within {self.timeout:g} s") from None
        if frame is None:
            assert self.end is not None
            raise Failed(
                f"the target ended the stream instead of sending {what}: {self.end.describe()}"
            )
        which = frame.WhichOneof("frame")
        expect(which == kind, f"expected {what}, got a {which or 'empty'} frame")
        return frame

    async def ended(self, timeout: float | None = None) -> Ended | None:
        """Wait for the target to end the stream (None if it stays open `timeout` seconds);
        frames other than heartbeats read meanwhile are listed in `Ended.frames`."""
        seen: list[str] = []
        try:
            while self.end is None:
                frame = await self.read(timeout)
                if frame is not None:
                    seen.append(frame.WhichOneof("frame") or "empty")
        except TimeoutError:
            return None
        self.end.frames = seen
        return self.end

    async def ping(self) -> peer_link_pb2.Pong:
        """Send a Ping; the Pong that answers it (fails if none comes)."""
        nonce = secrets.randbits(63)
        sent = wire.timestamp_ns(_now_ns())
        await self.send(
            peer_link_pb2.PushRequest(ping=peer_link_pb2.Ping(nonce=nonce, transmit_time=sent))
        )
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    match = next((p for p in self.pongs if p.nonce == nonce), None)
                    if match is not None:
                        return match
                    frame = await self._next()
                    if frame is None:
                        assert self.end is not None
                        raise Failed(f"the stream ended awaiting a Pong: {self.end.describe()}")
                    if frame.WhichOneof("frame") != "pong":
                        raise Failed(
                            f"expected a Pong, got a {frame.WhichOneof('frame') or 'empty'} frame"
                        )
        except TimeoutError:
            raise Failed(f"no Pong for our Ping within {self.timeout:g} s") from None

    def close(self) -> None:
        self.call.cancel()


@dataclass
class Opened:
    stream: PushStream
    nonce: bytes
    frame: peer_link_pb2.Welcome
    welcome: link.Welcome
    last_receipted: int


@dataclass
class Settled:
    """A batch we delivered and the batch receipt that settled it (verified)."""

    first: int
    payloads: list[common_pb2.SignedPayload]
    ids: list[str]
    receipt: link.BatchReceipt
    signed: common_pb2.SignedPayload

    def rejection(self, sequence: int) -> link.RejectionItem | None:
        return next((r for r in self.receipt.rejections if r.sequence == sequence), None)

    def receipt_item(self, sequence: int) -> link.ReceiptItem | None:
        return next((r for r in self.receipt.receipts if r.sequence == sequence), None)


class PeerSession:
    """Everything the dialling checks share: keys, the channel, and where the link stands."""

    def __init__(self, material: Material, address: str, *, timeout: float) -> None:
        self.material = material
        self.address = address
        self.timeout = timeout
        self.us = material.us
        self.target = material.target
        self.signer: Signer = material.signer()
        self.signing_der = material.our_signing_der()
        self.keyring = material.keyring_for_target()
        cert, key, ca = material.gateway_files()
        self.channel = secure_channel(address, credentials(cert, key, ca), server_party=self.target)
        self.stub = peer_link_pb2_grpc.PeerLinkServiceStub(self.channel)
        self.settled_up_to = 0  # the S of our next Hello: every sequence 1..S is settled
        self.held: dict[int, link.BatchReceipt] = {}  # sequence -> the batch receipt settling it
        self.receipts_checked = 0
        self.receipt_problems: list[str] = []
        self.delivered: list[Settled] = []
        self.items = Items()  # the current check's per-vector outcomes (set by the runner)
        self._open: list[PushStream] = []
        self.examples: tuple[list[Any], list[Any]] = ([], [])  # (valid, invalid) golden examples
        self.examples_dir = DEFAULT_DIR
        self.listener: Any = None  # the listening half (`--listen`), a `listener.Listener`
        self.operator: str | None = None  # the target's operator that makes it send to us

    async def close(self) -> None:
        for stream in self._open:
            stream.close()
        await self.channel.close()
        if self.listener is not None:
            await self.listener.close()

    def close_streams(self) -> None:
        for stream in self._open:
            stream.close()
        self._open.clear()

    # -- streams

    def call(self) -> PushStream:
        stream = PushStream(self.stub.Push(), self.timeout)
        self._open.append(stream)
        return stream

    def hello(
        self,
        *,
        last_receipted: int | None = None,
        nonce: bytes | None = None,
        party: str | None = None,
        version: int = PROTOCOL_VERSION,
        signing_certificates: list[bytes] | None = None,
        lane: int = link.ROUTINE_LANE,
    ) -> peer_link_pb2.PushRequest:
        """A Hello for the suite's stream: on the ROUTINE lane unless `lane` says otherwise
        (every example the suite delivers is ROUTINE)."""
        frame = peer_link_pb2.Hello(
            protocol_version=version,
            party=self.us if party is None else party,
            last_receipted_sequence=self.settled_up_to
            if last_receipted is None
            else last_receipted,
            nonce=secrets.token_bytes(link.NONCE_BYTES) if nonce is None else nonce,
            lane=lane,  # type: ignore[arg-type]  # a plain int: checks send bad lanes too
        )
        frame.signing_certificates.extend(
            [self.signing_der] if signing_certificates is None else signing_certificates
        )
        return peer_link_pb2.PushRequest(hello=frame)

    async def open(self, *, last_receipted: int | None = None) -> Opened:
        """A new stream: Hello, then the Welcome, verified as the spec requires of a sender
        before its first delivery. Adopts the Welcome's last sequence."""
        self.close_streams()
        stream = self.call()
        request = self.hello(last_receipted=last_receipted)
        await stream.send(request)
        frame = await stream.expect_frame("welcome", "a Welcome")
        opened = self.verify_welcome(stream, request.hello, frame.welcome)
        self.settled_up_to = opened.welcome.last_sequence
        return opened

    def verify_welcome(
        self, stream: PushStream, hello: peer_link_pb2.Hello, frame: peer_link_pb2.Welcome
    ) -> Opened:
        expect(
            1 <= len(frame.signing_certificates) <= 4,
            f"the Welcome carries {len(frame.signing_certificates)} signing certificates (1..4)",
        )
        try:
            welcome = wire.welcome_from_wire(
                frame, self.keyring, receiver_party=self.target, sender_party=self.us
            )
        except RemoteProtocolError as exc:
            raise Failed(f"Welcome refused: {exc}") from None
        expect(
            welcome.hello_nonce == hello.nonce,
            "the Welcome signs another nonce than our Hello's (a replayed Welcome)",
        )
        expect(
            welcome.protocol_version == hello.protocol_version,
            f"the Welcome speaks version {welcome.protocol_version}, our Hello "
            f"{hello.protocol_version}",
        )
        expect(
            welcome.lane == hello.lane,
            f"the Welcome is for lane {welcome.lane}, our Hello asked for lane {hello.lane}",
        )
        expect(
            (welcome.receiver_party, welcome.sender_party) == (self.target, self.us),
            f"the Welcome is for {welcome.sender_party}->{welcome.receiver_party}, "
            f"expected {self.us}->{self.target}",
        )
        s, last = hello.last_receipted_sequence, welcome.last_sequence
        expect(last >= s, f"the Welcome's last_sequence {last} is below our Hello's {s}")
        covered: set[int] = set()
        for receipt in welcome.batch_receipts:
            items: list[link.ReceiptItem | link.RejectionItem] = [
                *receipt.receipts,
                *receipt.rejections,
            ]
            for item in items:
                covered.add(item.sequence)
                if item.sequence not in self.held:
                    self.held[item.sequence] = receipt
        missing = [n for n in range(s + 1, last + 1) if n not in covered]
        expect(
            not missing,
            f"the Welcome (last_sequence {last}) leaves {len(missing)} sequence(s) after our "
            f"{s} unsettled, first {missing[0] if missing else 0}",
        )
        return Opened(stream, bytes(hello.nonce), frame, welcome, s)

    # -- deliveries

    def sign(
        self, envelope: envelope_pb2.Envelope, signer: Signer | None = None
    ) -> common_pb2.SignedPayload:
        return (signer or self.signer).sign(PAYLOAD_TYPE_ENVELOPE, envelope.SerializeToString())

    async def deliver(
        self,
        stream: PushStream,
        payloads: list[common_pb2.SignedPayload],
        ids: list[str],
        *,
        first: int | None = None,
    ) -> Settled:
        """Deliver `payloads` in one batch from the next sequence (or `first`); the batch
        receipt that settles it, verified (raises Failed if it is missing or fails a check)."""
        first = self.settled_up_to + 1 if first is None else first
        batch = peer_link_pb2.DeliveryBatch()
        for i, payload in enumerate(payloads):
            batch.deliveries.add(sequence=first + i, envelope=payload)
        await stream.send(peer_link_pb2.PushRequest(deliveries=batch))
        last = first + len(payloads) - 1
        frame = await stream.expect_frame(
            "batch_receipt", f"a batch receipt for sequences {first}..{last}"
        )
        settled = self.verify_settlement(frame.batch_receipt, first, payloads, ids)
        for n in range(first, last + 1):
            self.held[n] = settled.receipt
        if first == self.settled_up_to + 1:
            self.settled_up_to = last
        self.delivered.append(settled)
        return settled

    def verify_settlement(
        self,
        frame: peer_link_pb2.BatchReceipt,
        first: int,
        payloads: list[common_pb2.SignedPayload],
        ids: list[str],
    ) -> Settled:
        """Check a batch receipt against the batch we sent; record problems for the batch
        receipt check, and fail this one."""
        self.receipts_checked += 1
        problems = settlement_problems(
            frame, first, payloads, ids, self.keyring, receiver=self.target, sender=self.us
        )
        if isinstance(problems, list):
            where = f"batch receipt for {first}..{first + len(payloads) - 1}"
            self.receipt_problems += [f"{where}: {p}" for p in problems]
            raise Failed(f"{where} fails verification: {'; '.join(problems[:3])}")
        return Settled(first, list(payloads), list(ids), problems, frame.receipt)


def settlement_problems(
    frame: peer_link_pb2.BatchReceipt,
    first: int,
    payloads: list[common_pb2.SignedPayload],
    ids: list[str],
    keyring: Any,
    *,
    receiver: str,
    sender: str,
) -> link.BatchReceipt | list[str]:
    """The verified batch receipt, or what is wrong with it, for a batch of `payloads` sent
    from sequence `first` with message ids `ids` ("" where the payload has none we can name)."""
    try:
        receipt = wire.batch_receipt_from_signed(
            frame.receipt, keyring, receiver_party=receiver, sender_party=sender
        )
    except RemoteProtocolError as exc:
        return [str(exc)]
    problems: list[str] = []
    last = first + len(payloads) - 1
    if (receipt.first_sequence, receipt.last_sequence) != (first, last):
        problems.append(
            f"covers {receipt.first_sequence}..{receipt.last_sequence}, we sent {first}..{last}"
        )
    for kind, seqs in (
        ("receipts", [r.sequence for r in receipt.receipts]),
        ("rejections", [r.sequence for r in receipt.rejections]),
    ):
        if seqs != sorted(seqs):
            problems.append(f"its {kind} are not in sequence order")
    if receipt.journal_time_ns <= 0:
        problems.append("no journal_time")
    for r in receipt.receipts:
        i = r.sequence - first
        if not 0 <= i < len(payloads):
            continue
        if r.digest != sha256(payloads[i].payload):
            problems.append(f"sequence {r.sequence}: envelope_sha256 is not the payload's")
        if ids[i] and r.message_id != ids[i]:
            problems.append(f"sequence {r.sequence}: receipts {r.message_id}, we sent {ids[i]}")
        if r.journal_position < 1:
            problems.append(f"sequence {r.sequence}: journal_position {r.journal_position}")
    for j in receipt.rejections:
        i = j.sequence - first
        if not 0 <= i < len(payloads):
            continue
        if j.digest != sha256(payloads[i].payload):
            problems.append(
                f"sequence {j.sequence}: rejection's envelope_sha256 is not the payload's"
            )
        if j.message_id and ids[i] and j.message_id != ids[i]:
            problems.append(f"sequence {j.sequence}: rejects {j.message_id}, we sent {ids[i]}")
    return problems or receipt


def _status(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name} {exc.details()!r}"
    return type(exc).__name__


def _now_ns() -> int:
    return time.time_ns()
