"""The receiving end of a peer link: `PeerLinkService.Push`, served to the peer gateway only.

A thin adapter around `hotline.link.InboundLink`, one core per peer that outlives the streams:
it reads frames, feeds them to the core, and carries out the core's actions: `Persist` a
delivery batch (one journal operation and one commit for the whole batch, which signs the
batch receipt in the same transaction), `Send` a frame on the stream it belongs to, report an
`Event`. The acceptance checks, the ordering (a batch receipt only after its commit, a Welcome
only after every earlier batch is durable) and the duplicate index live in the core.

Only one stream per peer is served at a time: a new Hello makes the core start a new stream;
the older stream is ended with ABORTED, its batches still become durable, and the new
stream's Welcome waits for them.

A Hello whose `last_receipted_sequence` is beyond what our journal holds means the peer holds
our batch receipts for batches our journal lost: the stream ends with DATA_LOSS (every time
the peer dials), and `on_data_loss` is told once per distinct claim, so the gateway journals
one DATA_LOSS security entry, not one per reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc

from hotline import link, wire
from hotline.acceptance import Acceptance
from hotline.errors import ProtocolError, SignatureError
from hotline.signing import KeyRing, Signer
from hotline.v1 import peer_link_pb2, peer_link_pb2_grpc
from server.journal import JournalError
from server.peerlink.checkpoints import PeerCheckpoints
from server.peerlink.status import LinkStatus, printable
from server.store import Store

log = logging.getLogger("hotline.link.in")

LinkNotice = Callable[[bool, str], Awaitable[None]]
DataLossNotice = Callable[[str], Awaitable[None]]
Context = grpc.aio.ServicerContext[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse]

_CODES = {end: getattr(grpc.StatusCode, end.value) for end in link.StreamEnd}


@dataclass(frozen=True)
class _End:
    """Ends a stream: with a status code, or with OK (None) after the peer half-closed it."""

    code: grpc.StatusCode | None
    detail: str


_Item = peer_link_pb2.PushResponse | _End


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
        on_data_loss: DataLossNotice | None = None,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._signer = signer
        self._certs = signing_certificates
        self._on_link = on_link
        self._on_data_loss = on_data_loss
        self._data_loss_told: set[str] = set()
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self.core = link.InboundLink(
            store.party,
            store.peer_party,
            last_sequence=store.journal.last_sequence(store.peer_party),
            seen=store.seen,
            archive=store.journal,
            check=Acceptance(keyring, sender_party=store.peer_party, receiver_party=store.party),
            heartbeat_interval=heartbeat_interval,
            dead_after=dead_after,
        )
        self._streams: dict[int, asyncio.Queue[_Item]] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self.status = LinkStatus(detail="no stream from the peer yet")
        self._checkpoints = PeerCheckpoints(store, keyring)

    @property
    def party(self) -> str:
        return self._store.party

    @property
    def peer_party(self) -> str:
        return self._store.peer_party

    async def Push(
        self, request_iterator: AsyncIterator[peer_link_pb2.PushRequest], context: Context
    ) -> AsyncIterator[peer_link_pb2.PushResponse]:
        requests = aiter(request_iterator)
        hello = await self._hello(requests, context)
        try:
            stream = self.core.hello(hello, time.time())
        except link.PeerViolation as exc:
            self._data_loss(exc)
            await context.abort(_CODES[exc.end], str(exc))
        for older, previous in self._streams.items():
            previous.put_nowait(_End(grpc.StatusCode.ABORTED, f"replaced by stream {stream}"))
            log.info("inbound stream %d from %s replaced by a newer one", older, self.peer_party)
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._streams[stream] = queue
        self.status.detail = f"stream from {context.peer()}"
        self._pump()
        reason = "the peer closed the stream"
        reader = asyncio.create_task(self._read(stream, requests, queue))
        ticker = asyncio.create_task(self._tick(stream, queue))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    reason = item.detail
                    if item.code is not None:
                        await context.abort(item.code, item.detail)
                    break
                yield item
        except asyncio.CancelledError:
            reason = "the stream was cancelled (the peer went away, or shutting down)"
            raise
        finally:
            reader.cancel()
            ticker.cancel()
            await asyncio.gather(reader, ticker, return_exceptions=True)
            del self._streams[stream]
            current = stream == self.core.stream
            self.core.close(stream)
            if current and self.status.up:
                self.status.went(False, time.time(), reason)
                log.warning("inbound link from %s down: %s", self.peer_party, printable(reason))
                await asyncio.shield(self._on_link(False, reason))

    async def _hello(
        self, requests: AsyncIterator[peer_link_pb2.PushRequest], context: Context
    ) -> link.Hello:
        """The first frame: a Hello from the peer, whose signing certificates we trust."""
        try:
            async with asyncio.timeout(self._dead_after):
                first = await anext(requests)
        except (StopAsyncIteration, TimeoutError):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the stream must open with Hello"
            )
        which = first.WhichOneof("frame")
        if which is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a frame with no member set")
        if which != "hello":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"the first frame must be Hello, got {which}"
            )
        hello = first.hello
        if hello.party != self.peer_party:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Hello claims party {hello.party}, but the caller is the {self.peer_party} gateway",
            )
        if not 1 <= len(hello.signing_certificates) <= 4:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a Hello carries 1..4 signing certificates"
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
        return wire.hello_from_wire(hello)

    async def _read(
        self,
        stream: int,
        requests: AsyncIterator[peer_link_pb2.PushRequest],
        queue: asyncio.Queue[_Item],
    ) -> None:
        try:
            async for request in requests:
                which = request.WhichOneof("frame")
                now = time.time()
                if which == "deliveries":
                    self.core.receive(wire.deliveries_from_wire(request.deliveries), now, stream)
                elif which == "ping":
                    self.core.receive(wire.ping_from_wire(request.ping), now, stream)
                elif which == "pong":
                    self.core.receive(wire.pong_from_wire(request.pong), now, stream)
                elif which == "checkpoint":
                    self._background_task(self._checkpoint(request.checkpoint))
                elif which == "hello":
                    raise link.PeerViolation("Hello sent twice on one stream")
                else:
                    raise link.PeerViolation(
                        "a frame with no member set", link.StreamEnd.INVALID_ARGUMENT
                    )
                self._pump()
            queue.put_nowait(_End(None, "the peer closed the stream"))
        except link.PeerViolation as exc:
            queue.put_nowait(_End(_CODES[exc.end], str(exc)))
        except ProtocolError as exc:
            log.exception("inbound link from %s failed", self.peer_party)
            queue.put_nowait(_End(grpc.StatusCode.INTERNAL, str(exc)))

    async def _tick(self, stream: int, queue: asyncio.Queue[_Item]) -> None:
        while True:
            await asyncio.sleep(min(0.5, self._heartbeat_interval / 2))
            if stream == self.core.stream:
                self.core.tick(time.time())
                self._pump()

    # ------------------------------------------------------------------ actions

    def _pump(self) -> None:
        """Carry out the core's actions, in order."""
        for action in self.core.drain():
            if isinstance(action, link.Send):
                queue = self._streams.get(action.stream)
                if queue is not None:
                    frame = action.frame
                    assert not isinstance(frame, link.Hello | link.DeliveryBatch)
                    if isinstance(frame, link.Welcome):  # with what we witnessed (LINK-28)
                        frame = replace(frame, witnessed=self._checkpoints.latest)
                    queue.put_nowait(
                        wire.receiver_frame_to_wire(
                            frame, self._signer, self._certs, time.time_ns()
                        )
                    )
            elif isinstance(action, link.Persist):
                record = action.record
                assert isinstance(record, link.JournalBatch)
                self._persist(action.token, record)
            else:
                self._event(action.event)

    def _persist(self, token: int, batch: link.JournalBatch) -> None:
        for item in batch.refused:
            log.warning(
                "refused delivery %d (%s) from %s: %s %s",
                item.sequence,
                printable(item.message_id, 64),  # read before it was validated
                self.peer_party,
                item.reason.value,
                printable(item.detail),
            )
        durable = self._store.journal_batch(batch, self._signer)

        def done(future: asyncio.Future[link.BatchReceipt]) -> None:
            self._background.discard(future)
            try:
                if future.cancelled() or future.exception() is not None:
                    problem = "cancelled" if future.cancelled() else future.exception()
                    log.error("could not journal batch %d..: %s", batch.first_sequence, problem)
                    self.core.failed(token)
                    self._end_current(
                        grpc.StatusCode.UNAVAILABLE, f"journal write failed: {problem}"
                    )
                else:
                    self.core.persisted(token, future.result())
                    self.status.last_sequence = self.core.durable_sequence
            except link.PeerViolation as exc:  # a Welcome released now may refuse the Hello
                self._data_loss(exc)
                self._end_current(_CODES[exc.end], str(exc))
            self._pump()

        self._background.add(durable)
        durable.add_done_callback(done)

    def _data_loss(self, violation: link.PeerViolation) -> None:
        """Our journal lost what the peer holds of it: tell the gateway (once per claim)."""
        detail = str(violation)
        if violation.end is not link.StreamEnd.DATA_LOSS or detail in self._data_loss_told:
            return
        self._data_loss_told.add(detail)
        log.critical("DATA LOSS on the inbound link from %s: %s", self.peer_party, detail)
        if self._on_data_loss is not None:
            self._background_task(self._on_data_loss(detail))

    def _end_current(self, code: grpc.StatusCode | None, detail: str) -> None:
        queue = self._streams.get(self.core.stream)
        if queue is not None:
            queue.put_nowait(_End(code, detail))

    def _event(self, event: link.LinkEvent) -> None:
        if isinstance(event, link.LinkUp):
            self.status.last_sequence = event.last_sequence
            self.status.went(True, time.time(), self.status.detail)
            log.info(
                "inbound link from %s up; holding up to sequence %d",
                self.peer_party,
                event.last_sequence,
            )
            self._background_task(
                self._on_link(
                    True, f"{self.peer_party} resumed after sequence {event.last_sequence}"
                )
            )
        elif isinstance(event, link.LinkDown):
            self._end_current(grpc.StatusCode.UNAVAILABLE, f"link down: {event.reason}")
        elif isinstance(event, link.Measured):  # (JournalLost is the sending end's)
            self.status.rtt, self.status.clock_offset = event.rtt, event.clock_offset

    def _background_task(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def shutdown(self) -> None:
        """End every stream with UNAVAILABLE (the gateway is stopping); the journal writes
        already started still finish (`drain`), and their batch receipts go out in the next
        Welcome."""
        for queue in self._streams.values():
            queue.put_nowait(_End(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down"))

    async def drain(self) -> None:
        """Wait for the journal writes and notices already submitted (for a clean stop)."""
        with contextlib.suppress(Exception):
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _checkpoint(self, checkpoint: peer_link_pb2.Checkpoint) -> None:
        # verified, witnessed and journaled; a bad one is journaled as a SECURITY entry
        try:
            await self._checkpoints.receive(checkpoint)
        except JournalError as exc:  # e.g. the journal file is gone: the gateway is stopping
            log.error("could not journal a checkpoint from %s: %s", self.peer_party, exc)
