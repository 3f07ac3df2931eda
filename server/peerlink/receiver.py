"""The receiving end of a peer link: `PeerLinkService.Push`, served to the peer gateway only.

A thin adapter around `hotline.link.InboundLink`. For each delivery the core says accept,
refuse or resend; for an accepted one this adapter verifies the signature (before parsing),
parses and validates the envelope, checks it is from the peer and for us, and journals it with
its signed receipt in one transaction. Responses go back in the order deliveries arrived.

Only one stream per peer is served at a time: a new stream from the peer ends the old one and
waits until all of the old one's journal writes are done, so the new stream's `Welcome` is
exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from certs.errors import IdentityError
from certs.identity import Role, parse_spiffe_id
from hotline import link, wire
from hotline.errors import ProtocolError, SignatureError
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, KeyRing, Signer, sha256
from hotline.v1 import envelope_pb2, peer_link_pb2, peer_link_pb2_grpc
from hotline.validation import validate_envelope
from server.peerlink.checkpoints import PeerCheckpoints
from server.peerlink.status import LinkStatus, printable
from server.store import Store

log = logging.getLogger("hotline.link.in")

LinkNotice = Callable[[bool, str], Awaitable[None]]


class PeerLinkServicer(peer_link_pb2_grpc.PeerLinkServiceServicer):
    def __init__(
        self,
        *,
        store: Store,
        keyring: KeyRing,
        signer: Signer,
        signing_certificates: list[bytes],
        on_link: LinkNotice,
        heartbeat_interval: float,
        dead_after: float,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._signer = signer
        self._certs = signing_certificates
        self._on_link = on_link
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self._generation = 0  # bumped by every new stream; older streams stop accepting
        self._current: asyncio.Task[Any] | None = None
        self._writes: set[asyncio.Future[Any]] = set()  # journal writes not yet durable
        self.status = LinkStatus(detail="no stream from the peer yet")
        self._checkpoints = PeerCheckpoints(store, keyring)

    @property
    def party(self) -> str:
        return self._store.party

    @property
    def peer_party(self) -> str:
        return self._store.peer_party

    async def Push(
        self,
        request_iterator: AsyncIterator[peer_link_pb2.PushRequest],
        context: grpc.aio.ServicerContext[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse],
    ) -> AsyncIterator[peer_link_pb2.PushResponse]:
        # Only one stream per peer: from now on an older stream accepts no delivery (its
        # reader checks the generation before each), so once the journal writes it already
        # submitted are durable, `last_sequence` is exact for our Welcome. We do not wait
        # for the older stream itself: on a dead connection it may sit in grpc for a while.
        self._generation += 1
        generation = self._generation
        previous = self._current
        if previous is not None and not previous.done():
            previous.cancel()
        self._current = asyncio.current_task()
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        async with contextlib.aclosing(
            self._serve(request_iterator, context, generation)
        ) as responses:
            async for response in responses:
                yield response

    async def _serve(
        self,
        requests: AsyncIterator[peer_link_pb2.PushRequest],
        context: grpc.aio.ServicerContext[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse],
        generation: int,
    ) -> AsyncGenerator[peer_link_pb2.PushResponse, None]:
        core = link.InboundLink(
            self.party,
            self.peer_party,
            self._store.journal,
            heartbeat_interval=self._heartbeat_interval,
            dead_after=self._dead_after,
        )
        try:
            async with asyncio.timeout(self._dead_after):
                first = await anext(requests)
        except (StopAsyncIteration, TimeoutError):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the stream must open with Hello"
            )
        if first.WhichOneof("frame") != "hello":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the first frame must be Hello, got {first.WhichOneof('frame')}",
            )
        hello = first.hello
        if hello.party != self.peer_party:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Hello claims party {hello.party}, but the caller is the {self.peer_party} gateway",
            )
        for der in hello.signing_certificates:
            try:
                key = self._keyring.add_der(der)
            except SignatureError as exc:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, f"signing certificate refused: {exc}"
                )
            if key.party != self.peer_party:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"Hello carries party {key.party}'s signing key; the peer is {self.peer_party}",
                )
            await self._store.record_key(der, key.party)
        try:
            welcome = core.hello(
                link.Hello(hello.party, hello.last_receipted_sequence, hello.protocol_version),
                time.time(),
            )
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        frame = peer_link_pb2.Welcome(
            protocol_version=welcome.protocol_version,
            party=welcome.party,
            last_sequence=welcome.last_sequence,
        )
        frame.signing_certificates.extend(self._certs)
        for info in welcome.receipts:
            frame.receipts.append(wire.receipt_frame(info))
        for rejection in welcome.rejections:
            frame.rejections.append(wire.rejection_frame(rejection))
        yield peer_link_pb2.PushResponse(welcome=frame)
        self.status.last_sequence = welcome.last_sequence
        self.status.went(True, time.time(), f"stream from {context.peer()}")
        await self._on_link(
            True, f"{self.peer_party} resumed after sequence {welcome.last_sequence}"
        )
        log.info(
            "inbound link from %s up; holding up to sequence %d",
            self.peer_party,
            welcome.last_sequence,
        )

        replies: asyncio.Queue[Awaitable[peer_link_pb2.PushResponse | None] | None] = (
            asyncio.Queue()
        )
        reason = "the peer closed the stream"
        reader = asyncio.create_task(self._read(core, requests, replies, generation))
        try:
            while True:
                try:
                    async with asyncio.timeout(self._heartbeat_interval):
                        item = await replies.get()
                except TimeoutError:
                    item = None
                    if reader.done():
                        break
                if item is None:
                    if reader.done() and replies.empty():
                        break
                    now = time.time()
                    if core.dead(now):
                        reason = f"no frame from the peer for {self._dead_after:g} s"
                        break
                    ping = core.ping_due(now)
                    if ping is not None:
                        yield peer_link_pb2.PushResponse(ping=wire.ping_to_wire(ping))
                    continue
                # shielded: a cancelled stream must not cancel a journal write under way
                response = await asyncio.shield(item)
                if response is not None:
                    yield response
                ping = core.ping_due(time.time())
                if ping is not None:
                    yield peer_link_pb2.PushResponse(ping=wire.ping_to_wire(ping))
            if reader.done() and reader.exception() is not None:
                reason = f"{type(reader.exception()).__name__}: {reader.exception()}"
        except asyncio.CancelledError:
            reason = "replaced by a new stream from the peer or shutting down"
            raise
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            # let every accepted delivery finish journaling before the next stream starts
            while not replies.empty():
                pending = replies.get_nowait()
                if pending is not None:
                    try:
                        await pending
                    except Exception:
                        log.exception("journal write failed while closing the stream")
            if generation == self._generation:  # a replaced stream is not a link going down
                self.status.went(False, time.time(), reason)
                log.warning("inbound link from %s down: %s", self.peer_party, printable(reason))
                await asyncio.shield(self._on_link(False, reason))
            else:
                log.info("inbound stream from %s replaced by a newer one", self.peer_party)

    async def _read(
        self,
        core: link.InboundLink,
        requests: AsyncIterator[peer_link_pb2.PushRequest],
        replies: asyncio.Queue[Awaitable[peer_link_pb2.PushResponse | None] | None],
        generation: int,
    ) -> None:
        async for request in requests:
            if generation != self._generation:
                raise ProtocolError("a newer stream from the peer replaced this one")
            now = time.time()
            which = request.WhichOneof("frame")
            if which == "delivery":
                replies.put_nowait(self._deliver(core, request.delivery, now))
            elif which == "ping":
                pong = core.ping(wire.ping_from_wire(request.ping), now)
                replies.put_nowait(_ready(peer_link_pb2.PushResponse(pong=wire.pong_to_wire(pong))))
            elif which == "pong":
                measured = core.pong(wire.pong_from_wire(request.pong), now)
                self.status.rtt, self.status.clock_offset = measured.rtt, measured.clock_offset
            elif which == "checkpoint":
                replies.put_nowait(self._checkpoint(request.checkpoint))
            else:
                raise ProtocolError(f"unexpected frame {which!r} after Hello")
        replies.put_nowait(None)

    def _deliver(
        self, core: link.InboundLink, delivery: peer_link_pb2.Delivery, now: float
    ) -> Awaitable[peer_link_pb2.PushResponse | None]:
        signed = delivery.envelope
        digest = sha256(signed.payload)
        # The message id is needed for dedup before the envelope may be parsed: read it from
        # the signed bytes only after the signature checks out.
        try:
            payload = self._keyring.verify(
                signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party=self.peer_party
            )
        except SignatureError as exc:
            payload = None
            signature_problem = str(exc)
        envelope = envelope_pb2.Envelope()
        parse_problem = ""
        if payload is not None:
            try:
                envelope.ParseFromString(payload)
            except Exception as exc:
                parse_problem = f"envelope bytes do not parse: {exc}"
        # Until the signature checks out, nothing in the payload is trusted, not even its id.
        message_id = envelope.message_id if payload is not None and not parse_problem else ""
        frame = link.Delivery(delivery.sequence, message_id, digest, signed)
        decision = core.delivery(frame, now)
        if isinstance(decision, link.Resend):
            reply = decision.frame
            if isinstance(reply, link.Receipt):
                return _ready(peer_link_pb2.PushResponse(receipt=wire.receipt_frame(reply.info)))
            return _ready(peer_link_pb2.PushResponse(rejection=wire.rejection_frame(reply)))
        if isinstance(decision, link.Refuse):
            return self._refuse(core, decision.rejection, digest)
        # Accepted in order: now the content checks that may still refuse it.
        if payload is None:
            return self._refuse(
                core,
                link.Rejection(
                    frame.sequence,
                    frame.message_id,
                    link.RejectReason.BAD_SIGNATURE,
                    signature_problem,
                ),
                digest,
            )
        if parse_problem:
            return self._refuse(
                core,
                link.Rejection(
                    frame.sequence,
                    frame.message_id,
                    link.RejectReason.INVALID_MESSAGE,
                    parse_problem,
                ),
                digest,
            )
        violations = validate_envelope(envelope)
        if violations:
            return self._refuse(
                core,
                link.Rejection(
                    frame.sequence,
                    frame.message_id,
                    link.RejectReason.INVALID_MESSAGE,
                    f"{len(violations)} field violation(s): "
                    + "; ".join(str(v) for v in violations[:8])[:900],
                    # FieldViolation allows at most 64, each with a non-empty field path
                    violations=tuple((v.field, v.description) for v in violations if v.field)[:64],
                ),
                digest,
            )
        taken = self._store.journal.query(
            "SELECT sender_party FROM messages WHERE message_id = ?", (envelope.message_id,)
        )
        if taken:
            # Our own outbound message has this id (an inbound one would be a duplicate, which
            # the link core answers): refuse it rather than fail the journal write forever.
            return self._refuse(
                core,
                link.Rejection(
                    frame.sequence,
                    frame.message_id,
                    link.RejectReason.INVALID_MESSAGE,
                    f"message_id {envelope.message_id} already names a message of party "
                    f"{taken[0][0]} in this journal; message ids must be unique forever",
                ),
                digest,
            )
        wrong = self._wrong_party(envelope)
        if wrong:
            return self._refuse(
                core,
                link.Rejection(
                    frame.sequence, frame.message_id, link.RejectReason.WRONG_PARTY, wrong
                ),
                digest,
            )
        return self._journal(core, frame, signed, envelope)

    def _track(self, write: asyncio.Future[Any]) -> None:
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    def _wrong_party(self, envelope: envelope_pb2.Envelope) -> str:
        """Why the envelope may not travel on this link, or "" if it may.

        The parties must be this link's, and every identity the envelope names as its author
        (the originator, an acknowledgement's responder) must be an operator of the sending
        party: the peer's key may only speak for the peer's own people.
        """
        if envelope.sender_party != self.peer_party or envelope.recipient_party != self.party:
            return (
                f"envelope is {envelope.sender_party}->{envelope.recipient_party}, but this link "
                f"carries {self.peer_party}->{self.party}"
            )
        named = [("originator", envelope.originator)]
        if envelope.WhichOneof("body") == "acknowledgement":
            named.append(("acknowledgement.responder", envelope.acknowledgement.responder))
        for field, uri in named:
            try:
                identity = parse_spiffe_id(uri)
            except IdentityError as exc:
                return f"{field}: {exc}"
            if identity.party != self.peer_party or identity.role is not Role.OPERATOR:
                return f"{field} is {uri}, not an operator of party {self.peer_party}"
        return ""

    def _journal(
        self,
        core: link.InboundLink,
        frame: link.Delivery,
        signed: Any,
        envelope: envelope_pb2.Envelope,
    ) -> asyncio.Future[peer_link_pb2.PushResponse]:
        # Submitted now, in arrival order; many deliveries share one group commit.
        durable = self._store.journal_inbound(frame, signed, envelope, self._signer)
        self._track(durable)

        async def receipt() -> peer_link_pb2.PushResponse:
            info = await durable
            core.settled(frame.message_id)
            self.status.last_sequence = frame.sequence
            return peer_link_pb2.PushResponse(receipt=wire.receipt_frame(info))

        return asyncio.ensure_future(receipt())

    def _refuse(
        self, core: link.InboundLink, rejection: link.Rejection, digest: bytes
    ) -> Awaitable[peer_link_pb2.PushResponse]:
        core.settled(rejection.message_id)
        log.warning(
            "refused delivery %d (%s) from %s: %s %s",
            rejection.sequence,
            rejection.message_id,
            self.peer_party,
            rejection.reason.value,
            rejection.detail,
        )
        response = peer_link_pb2.PushResponse(rejection=wire.rejection_frame(rejection))
        if not rejection.reason.consumes_sequence:
            return _ready(response)
        durable = self._store.journal_inbound_refusal(rejection, digest)
        self._track(durable)

        async def after() -> peer_link_pb2.PushResponse:
            await durable
            self.status.last_sequence = rejection.sequence
            return response

        return asyncio.ensure_future(after())

    async def _checkpoint(self, checkpoint: peer_link_pb2.Checkpoint) -> None:
        # verified, witnessed and journaled; a bad one is journaled as a SECURITY entry
        await self._checkpoints.receive(checkpoint)


async def _ready(response: peer_link_pb2.PushResponse) -> peer_link_pb2.PushResponse:
    return response
