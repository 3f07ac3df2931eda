"""The receiving end of a peer link: `PeerLinkService.Push`, served to the peer gateway only.

A thin adapter around `hotline.link.InboundLink`, one core per lane (precedence) of the peer's
direction, each outliving the streams: it reads frames, feeds them to the lane's core, and
carries out the core's actions: `Persist` a delivery batch (one journal operation and one
commit for the whole batch, which signs the batch receipt in the same transaction; a FLASH or
IMMEDIATE lane's commit does not wait for a group commit in progress), `Send` a frame on the
stream it belongs to, report an `Event`. The acceptance checks, the ordering (a batch receipt
only after its commit, a Welcome only after every earlier batch is durable) and the duplicate
index (shared by the lanes) live in the cores.

The lanes run side by side on the event loop. So that a FLASH batch is not checked after a
whole ROUTINE batch, a PRIORITY or ROUTINE batch's byte-only checks (the signature above all)
run ahead a few deliveries at a time, yielding to the other lanes in between.

Only one stream per peer and lane is served at a time: a new Hello makes the lane's core start
a new stream; the older stream is ended with ABORTED, its batches still become durable, and
the new stream's Welcome waits for them. The inbound link is up from the first lane's Welcome
until the last lane's stream ends (a sender opens all four on one connection, and loses them
together).

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
from server.peerlink.status import LinkStatus, by_lane, printable
from server.store import Store

log = logging.getLogger("hotline.link.in")

LinkNotice = Callable[[bool, str], Awaitable[None]]
DataLossNotice = Callable[[str], Awaitable[None]]
Context = grpc.aio.ServicerContext[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse]

_CODES = {end: getattr(grpc.StatusCode, end.value) for end in link.StreamEnd}
INSPECT_STEP = 4  # deliveries of a lower lane's batch checked between yields to other lanes


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
        self._acceptance = {
            lane: Acceptance(
                keyring, sender_party=store.peer_party, receiver_party=store.party, lane=lane
            )
            for lane in link.LANES
        }
        self.cores = {
            lane: link.InboundLink(
                store.party,
                store.peer_party,
                lane=lane,
                last_sequence=store.journal.last_sequence(store.peer_party, lane),
                seen=store.seen,
                archive=store.journal,
                check=self._acceptance[lane],
                heartbeat_interval=heartbeat_interval,
                dead_after=dead_after,
            )
            for lane in link.LANES
        }
        self._streams: dict[tuple[int, int], asyncio.Queue[_Item]] = {}  # (lane, stream) ->
        self._up_lanes: set[int] = set()
        self._up_connection = ""  # the peer address (one connection) the link is up over
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
            link.check_hello(hello, self.peer_party)
            lane = hello.lane
            core = self.cores[lane]
            stream = core.hello(hello, time.time())
        except link.PeerViolation as exc:
            self._data_loss(exc)
            await context.abort(_CODES[exc.end], str(exc))
        for (older_lane, older), previous in self._streams.items():
            if older_lane == lane:
                previous.put_nowait(_End(grpc.StatusCode.ABORTED, f"replaced by stream {stream}"))
                log.info(
                    "inbound stream %d of lane %d from %s replaced by a newer one",
                    older,
                    lane,
                    self.peer_party,
                )
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._streams[lane, stream] = queue
        connection = context.peer()
        if self.status.up and connection != self._up_connection:
            # A new connection while the old one's streams are not all seen to end yet: the
            # old one is down now (its streams are being replaced lane by lane).
            self._up_lanes.clear()
            await self._down("the peer connected again")
        self._up_connection = connection
        self.status.detail = f"streams from {connection}"
        self._pump(lane)
        reason = "the peer closed the stream"
        reader = asyncio.create_task(self._read(lane, stream, requests, queue))
        ticker = asyncio.create_task(self._tick(lane, stream))
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
            del self._streams[lane, stream]
            current = stream == core.stream
            core.close(stream)
            if current:
                self._up_lanes.discard(lane)
            if current and self.status.up and not self._up_lanes:
                await asyncio.shield(self._down(reason))

    async def _down(self, reason: str) -> None:
        self.status.went(False, time.time(), reason)
        log.warning("inbound link from %s down: %s", self.peer_party, printable(reason))
        try:
            await self._on_link(False, reason)
        except JournalError as exc:  # the gateway is stopping: its journal closed first
            log.info("the inbound link's end was not journaled: %s", exc)

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
        lane: int,
        stream: int,
        requests: AsyncIterator[peer_link_pb2.PushRequest],
        queue: asyncio.Queue[_Item],
    ) -> None:
        core = self.cores[lane]
        try:
            async for request in requests:
                which = request.WhichOneof("frame")
                if which == "deliveries":
                    batch = wire.deliveries_from_wire(request.deliveries)
                    if lane not in link.URGENT_LANES:
                        await self._inspect_ahead(lane, batch)
                    core.receive(batch, time.time(), stream)
                elif which == "ping":
                    core.receive(wire.ping_from_wire(request.ping), time.time(), stream)
                elif which == "pong":
                    core.receive(wire.pong_from_wire(request.pong), time.time(), stream)
                elif which == "checkpoint":
                    self._background_task(self._checkpoint(request.checkpoint))
                elif which == "hello":
                    raise link.PeerViolation("Hello sent twice on one stream")
                else:
                    raise link.PeerViolation(
                        "a frame with no member set", link.StreamEnd.INVALID_ARGUMENT
                    )
                self._pump(lane)
            queue.put_nowait(_End(None, "the peer closed the stream"))
        except link.PeerViolation as exc:
            queue.put_nowait(_End(_CODES[exc.end], str(exc)))
        except ProtocolError as exc:
            log.exception("inbound link from %s failed", self.peer_party)
            queue.put_nowait(_End(grpc.StatusCode.INTERNAL, str(exc)))

    async def _inspect_ahead(self, lane: int, batch: link.DeliveryBatch) -> None:
        """Run the byte-only checks of a lower lane's batch a few deliveries at a time,
        letting the other lanes' frames in between (the core decides with the results)."""
        acceptance = self._acceptance[lane]
        for index, delivery in enumerate(batch.deliveries):
            if index and index % INSPECT_STEP == 0:
                await asyncio.sleep(0)
            acceptance.inspect_ahead(delivery)

    async def _tick(self, lane: int, stream: int) -> None:
        core = self.cores[lane]
        while True:
            await asyncio.sleep(min(0.5, self._heartbeat_interval / 2))
            if stream == core.stream:
                core.tick(time.time())
                self._pump(lane)

    # ------------------------------------------------------------------ actions

    def _pump(self, lane: int) -> None:
        """Carry out a lane's core's actions, in order."""
        for action in self.cores[lane].drain():
            if isinstance(action, link.Send):
                queue = self._streams.get((lane, action.stream))
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
                self._persist(lane, action.token, record)
            else:
                self._event(lane, action.event)

    def _persist(self, lane: int, token: int, batch: link.JournalBatch) -> None:
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
        core = self.cores[lane]

        def done(future: asyncio.Future[link.BatchReceipt]) -> None:
            self._background.discard(future)
            try:
                if future.cancelled() or future.exception() is not None:
                    problem = "cancelled" if future.cancelled() else future.exception()
                    log.error(
                        "could not journal batch %d.. of lane %d: %s",
                        batch.first_sequence,
                        lane,
                        problem,
                    )
                    core.failed(token)
                    self._end_current(
                        lane, grpc.StatusCode.UNAVAILABLE, f"journal write failed: {problem}"
                    )
                else:
                    core.persisted(token, future.result())
                    self.status.last_sequence = self.settled
            except link.PeerViolation as exc:  # a Welcome released now may refuse the Hello
                self._data_loss(exc)
                self._end_current(lane, _CODES[exc.end], str(exc))
            self._pump(lane)

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

    @property
    def settled(self) -> int:
        """Deliveries settled on this direction: the sum of the lanes' durable sequences."""
        return sum(core.durable_sequence for core in self.cores.values())

    def _end_current(self, lane: int, code: grpc.StatusCode | None, detail: str) -> None:
        queue = self._streams.get((lane, self.cores[lane].stream))
        if queue is not None:
            queue.put_nowait(_End(code, detail))

    def _event(self, lane: int, event: link.LinkEvent) -> None:
        if isinstance(event, link.LinkUp):
            self._up_lanes.add(lane)
            if self.status.up:
                return
            self.status.last_sequence = self.settled
            held = by_lane({lane: core.durable_sequence for lane, core in self.cores.items()})
            self.status.went(True, time.time(), self.status.detail)
            log.info("inbound link from %s up; holding up to sequences %s", self.peer_party, held)
            self._background_task(
                self._on_link(True, f"{self.peer_party} resumed after sequences {held}")
            )
        elif isinstance(event, link.LinkDown):
            self._end_current(lane, grpc.StatusCode.UNAVAILABLE, f"link down: {event.reason}")
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
