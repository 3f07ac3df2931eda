"""The listening half of the `peer` role (`--listen PORT`): a PeerLink the target dials.

The suite serves `PeerLinkService` as the other party's gateway, so the target, configured to
dial it (`peer_address`), pushes its own outbox here. The receiving rules are the protocol
core's: one `hotline.link.InboundLink` per lane (sequences, resends, the Welcome after every
earlier batch is durable) with `hotline.acceptance` (the checks of "Processing a delivery"), and
`hotline.wire` to sign the Welcome and the batch receipts with our signing key. "Durable" here
is memory: the suite is a test party, not a gateway, and keeps what it received only for the
run.

Two switches let checks misbehave on purpose: `hold` keeps the next batch's receipt back (as
if the connection died before it left; `hold_lanes` for some lanes only), and `bad_welcome`
signs the next Welcome over another nonce than the Hello's. Everything the target does wrong as a sender is recorded in
`problems`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography import x509

from certs.errors import CertsError
from certs.identity import identity_of
from hotline import link, wire
from hotline.acceptance import Acceptance
from hotline.errors import ConfigError, ProtocolError, SignatureError
from hotline.signing import PAYLOAD_TYPE_WELCOME
from hotline.transport import SERVER_OPTIONS, read
from hotline.v1 import peer_link_pb2, peer_link_pb2_grpc
from sim.conformance.material import Material

_CODES = {end: getattr(grpc.StatusCode, end.value) for end in link.StreamEnd}


class _Archive:
    """The batch receipts the suite signed, by lane and sequence (`link.ReceiptArchive`)."""

    def __init__(self) -> None:
        self.receipts: list[link.BatchReceipt] = []

    def batch_receipts_after(
        self, sender_party: str, lane: int, sequence: int
    ) -> list[link.BatchReceipt]:
        return [r for r in self.receipts if r.lane == lane and r.last_sequence > sequence]

    def batch_receipt_for(
        self, sender_party: str, lane: int, sequence: int
    ) -> link.BatchReceipt | None:
        return next(
            (
                r
                for r in self.receipts
                if r.lane == lane and r.first_sequence <= sequence <= r.last_sequence
            ),
            None,
        )


@dataclass
class StreamSeen:
    """What one stream from the target showed."""

    number: int
    caller: str
    hello: peer_link_pb2.Hello
    lane: int = link.ROUTINE_LANE
    bad_welcome: bool = False
    frames_after_welcome: list[str] = field(default_factory=list)
    ended: str = ""


@dataclass
class _End:
    code: grpc.StatusCode | None
    detail: str


class Listener(peer_link_pb2_grpc.PeerLinkServiceServicer):
    def __init__(self, material: Material, *, host: str, port: int, timeout: float) -> None:
        self.material = material
        self.host = host
        self.port = port
        self.timeout = timeout
        self.us = material.us
        self.target = material.target
        self.signer = material.signer()
        self.certs = [material.our_signing_der()]
        self.keyring = material.keyring_for_target()
        self.archive = _Archive()
        seen: dict[str, link.Seen] = {}
        self.cores = {
            lane: link.InboundLink(
                self.us,
                self.target,
                lane=lane,
                last_sequence=0,
                seen=seen,
                archive=self.archive,
                check=Acceptance(
                    self.keyring, sender_party=self.target, receiver_party=self.us, lane=lane
                ),
            )
            for lane in link.LANES
        }
        self.server: grpc.aio.Server | None = None
        self.streams: list[StreamSeen] = []
        self.accepted: dict[str, int] = {}  # message id -> how many times accepted
        self.refused: list[link.RejectionItem] = []
        self.checkpoints: list[peer_link_pb2.Checkpoint] = []
        self.problems: list[str] = []
        self.hold = False  # keep the next batch receipts back until the stream ends
        self.hold_lanes: set[int] = set()  # ... of these lanes only (as if their disk hung)
        self.held: list[tuple[int, int, link.BatchReceipt]] = []  # (lane, token, receipt)
        self.bad_welcome = False
        self.changed = asyncio.Event()
        # (lane, stream) -> its queue
        self._queues: dict[tuple[int, int], asyncio.Queue[peer_link_pb2.PushResponse | _End]] = {}
        self._positions = 0

    async def start(self) -> int:
        cert, key, ca = self.material.gateway_files()
        creds = grpc.ssl_server_credentials(
            [(read(key, "private key"), read(cert, "certificate"))],
            root_certificates=read(ca, "CA certificate"),
            require_client_auth=True,
        )
        self.server = grpc.aio.server(options=list(SERVER_OPTIONS))
        peer_link_pb2_grpc.add_PeerLinkServiceServicer_to_server(self, self.server)
        port = self.server.add_secure_port(f"{self.host}:{self.port}", creds)
        if not port:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}")
        await self.server.start()
        self.port = port
        return port

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop(0.2)

    def _note(self) -> None:
        self.changed.set()

    async def wait_for(self, predicate: Any, within: float) -> bool:
        """Wait until `predicate()` holds (True) or `within` seconds pass (False)."""
        deadline = time.monotonic() + within
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.2)):
                    await self.changed.wait()
        return True

    def end_current(self, detail: str) -> None:
        """End the streams in use, every lane's (UNAVAILABLE), as a gateway going away would."""
        for lane, core in self.cores.items():
            queue = self._queues.get((lane, core.stream))
            if queue is not None:
                queue.put_nowait(_End(grpc.StatusCode.UNAVAILABLE, detail))

    # ---------------------------------------------------------------- the service

    async def Push(
        self, request_iterator: AsyncIterator[peer_link_pb2.PushRequest], context: Any
    ) -> AsyncIterator[peer_link_pb2.PushResponse]:
        caller = self._caller(context)
        if caller != f"spiffe://{self.target.lower()}.hotline/gateway":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{caller} is not the peer")
        requests = aiter(request_iterator)
        try:
            async with asyncio.timeout(self.timeout):
                first = await anext(requests)
        except (StopAsyncIteration, TimeoutError):
            self.problems.append("a stream that sent no Hello")
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the stream must open with Hello"
            )
        if first.WhichOneof("frame") != "hello":
            self.problems.append(f"a stream opened with {first.WhichOneof('frame')}, not Hello")
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the first frame must be Hello"
            )
        hello = first.hello
        for der in hello.signing_certificates:
            try:
                key = self.keyring.add_der(der)
            except SignatureError as exc:
                self.problems.append(f"Hello carries a signing certificate we refuse: {exc}")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            if key.party != self.target:
                self.problems.append(f"Hello carries party {key.party}'s signing key")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "another party's key")
        try:
            parsed = wire.hello_from_wire(hello)
            link.check_hello(parsed, self.target)
            lane = parsed.lane
            core = self.cores[lane]
            stream = core.hello(parsed, time.time())
        except link.PeerViolation as exc:
            self.problems.append(f"Hello refused: {exc}")
            await context.abort(_CODES[exc.end], str(exc))
        seen = StreamSeen(stream, caller, hello, lane, bad_welcome=self.bad_welcome)
        self.bad_welcome = False
        self.streams.append(seen)
        for (older_lane, _), older in self._queues.items():
            if older_lane == lane:
                older.put_nowait(_End(grpc.StatusCode.ABORTED, "replaced by a newer stream"))
        queue: asyncio.Queue[peer_link_pb2.PushResponse | _End] = asyncio.Queue()
        self._queues[lane, stream] = queue
        self._pump(lane)
        self._note()
        reader = asyncio.create_task(self._read(seen, requests, queue))
        ticker = asyncio.create_task(self._tick(lane, stream))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    seen.ended = item.detail
                    if item.code is not None:
                        await context.abort(item.code, item.detail)
                    break
                yield item
        finally:
            reader.cancel()
            ticker.cancel()
            await asyncio.gather(reader, ticker, return_exceptions=True)
            del self._queues[lane, stream]
            seen.ended = seen.ended or "ended by the target"
            core.close(stream)
            self._release_held(lane)
            self._note()

    def _caller(self, context: Any) -> str:
        """The caller's SPIFFE ID, from the certificate it presented in the handshake."""
        pem = context.auth_context().get("x509_pem_cert", [b""])[0]
        try:
            return identity_of(x509.load_pem_x509_certificate(pem)).spiffe_id
        except (CertsError, ValueError) as exc:
            return f"(no identity: {exc})"

    async def _read(
        self,
        seen: StreamSeen,
        requests: AsyncIterator[peer_link_pb2.PushRequest],
        queue: asyncio.Queue[peer_link_pb2.PushResponse | _End],
    ) -> None:
        try:
            async for request in requests:
                which = request.WhichOneof("frame")
                seen.frames_after_welcome.append(which or "empty")
                now = time.time()
                if seen.bad_welcome and which in ("deliveries", "checkpoint"):
                    self.problems.append(
                        f"a {which} frame on a stream whose Welcome signed another nonce"
                    )
                    queue.put_nowait(_End(grpc.StatusCode.FAILED_PRECONDITION, "bad Welcome"))
                    return
                core = self.cores[seen.lane]
                if which == "deliveries":
                    core.receive(wire.deliveries_from_wire(request.deliveries), now, seen.number)
                elif which == "ping":
                    core.receive(wire.ping_from_wire(request.ping), now, seen.number)
                elif which == "pong":
                    core.receive(wire.pong_from_wire(request.pong), now, seen.number)
                elif which == "checkpoint":
                    self.checkpoints.append(request.checkpoint)
                else:
                    raise link.PeerViolation(
                        f"a {which or 'empty'} frame after the Hello",
                        link.StreamEnd.FAILED_PRECONDITION,
                    )
                self._pump(seen.lane)
                self._note()
            queue.put_nowait(_End(None, "the target closed the stream"))
        except link.PeerViolation as exc:
            self.problems.append(f"the target broke the protocol: {exc}")
            queue.put_nowait(_End(_CODES[exc.end], str(exc)))
        except ProtocolError as exc:
            self.problems.append(f"the target broke the protocol: {exc}")
            queue.put_nowait(_End(grpc.StatusCode.INTERNAL, str(exc)))

    async def _tick(self, lane: int, stream: int) -> None:
        core = self.cores[lane]
        while True:
            await asyncio.sleep(0.25)
            if stream == core.stream:
                core.tick(time.time())
                self._pump(lane)

    def _pump(self, lane: int) -> None:
        core = self.cores[lane]
        for action in core.drain():
            if isinstance(action, link.Send):
                queue = self._queues.get((lane, action.stream))
                frame = action.frame
                assert not isinstance(frame, link.Hello | link.DeliveryBatch)
                if queue is None:
                    continue
                seen = next(
                    (s for s in self.streams if s.number == action.stream and s.lane == lane),
                    None,
                )
                if isinstance(frame, link.Welcome) and seen is not None and seen.bad_welcome:
                    queue.put_nowait(self._tampered_welcome(frame))
                    continue
                queue.put_nowait(
                    wire.receiver_frame_to_wire(frame, self.signer, self.certs, time.time_ns())
                )
            elif isinstance(action, link.Persist):
                record = action.record
                assert isinstance(record, link.JournalBatch)
                receipt = self._journal(record)
                if self.hold or lane in self.hold_lanes:
                    self.held.append((lane, action.token, receipt))
                else:
                    core.persisted(action.token, receipt)
            elif isinstance(action.event, link.LinkDown):
                self.end_current(action.event.reason)

    def _journal(self, batch: link.JournalBatch) -> link.BatchReceipt:
        items = []
        for accepted in batch.accepted:
            self._positions += 1
            self.accepted[accepted.message_id] = self.accepted.get(accepted.message_id, 0) + 1
            d = accepted.delivery
            items.append(
                link.ReceiptItem(d.sequence, accepted.message_id, d.digest, self._positions)
            )
        self.refused.extend(batch.refused)
        receipt = wire.sign_batch_receipt(
            self.signer,
            sender_party=batch.sender_party,
            first_sequence=batch.first_sequence,
            last_sequence=batch.last_sequence,
            receipts=tuple(items),
            rejections=batch.refused,
            journal_time_ns=time.time_ns(),
            lane=batch.lane,
        )
        self.archive.receipts.append(receipt)
        return receipt

    def _release_held(self, lane: int) -> None:
        """A lane's stream ended: its held batches become 'durable' now, their receipts unsent."""
        held = [h for h in self.held if h[0] == lane]
        self.held = [h for h in self.held if h[0] != lane]
        for _, token, receipt in held:
            self.cores[lane].persisted(token, receipt)
        self._pump(lane)

    def _tampered_welcome(self, welcome: link.Welcome) -> peer_link_pb2.PushResponse:
        other = link.Welcome(
            welcome.receiver_party,
            welcome.sender_party,
            welcome.last_sequence,
            secrets.token_bytes(len(welcome.hello_nonce)),
            welcome.batch_receipts,
            welcome.protocol_version,
            lane=welcome.lane,
        )
        frame = wire.welcome_to_wire(other, self.signer, self.certs, time.time_ns())
        assert frame.welcome.payload_type == PAYLOAD_TYPE_WELCOME
        return peer_link_pb2.PushResponse(welcome=frame)
