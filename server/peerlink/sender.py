"""The sending end of a peer link: dial the peer gateway and push our outbox.

A thin adapter around `hotline.link.OutboundLink`: it owns the gRPC stream, the clock and the
reconnect loop; every rule lives in the link core. It needs from the gateway only an `Outbox`
(`server.peerlink.ports`, which the gateway's journal-backed store satisfies).

One connection runs three tasks under one `asyncio.TaskGroup` (reader, writer, ticker), so a
failure of any ends all three and the loop reconnects after a jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

import grpc

from hotline import link, wire
from hotline.errors import ProtocolError
from hotline.signing import KeyRing
from hotline.v1 import common_pb2, peer_link_pb2, peer_link_pb2_grpc
from server.peerlink.ports import Outbox
from server.peerlink.status import LinkStatus, printable

log = logging.getLogger("hotline.link.out")


LinkNotice = Callable[[bool, str], Awaitable[None]]


class PeerSender:
    def __init__(
        self,
        *,
        party: str,
        peer_party: str,
        outbox: Outbox,
        keyring: KeyRing,
        signing_certificates: list[bytes],
        channel_factory: Callable[[], grpc.aio.Channel],
        on_link: LinkNotice,
        window: int = link.DEFAULT_WINDOW,
        heartbeat_interval: float = link.DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = link.DEFAULT_DEAD_AFTER,
        reconnect_min: float = 0.2,
        reconnect_max: float = 10.0,
        checkpoints: Callable[[], common_pb2.SignedPayload | None] | None = None,
        checkpoint_interval: float = 60.0,
    ) -> None:
        self.party = party
        self.peer_party = peer_party
        self._outbox = outbox
        self._keyring = keyring
        self._certs = signing_certificates
        self._channel_factory = channel_factory
        self._on_link = on_link
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self._window = window
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._checkpoints = checkpoints
        self._checkpoint_interval = checkpoint_interval
        self._wake = asyncio.Event()
        self.status = LinkStatus()
        self.link = self._new_link()
        self._settling: set[asyncio.Task[None]] = set()
        self._failed_settlement: BaseException | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask the sender to stop: `run` returns at its next step (cancel it too)."""
        self._stop.set()

    def _new_link(self) -> link.OutboundLink:
        core = link.OutboundLink(
            self.party,
            self.peer_party,
            last_receipted_sequence=self._outbox.last_settled_outbound(),
            window=self._window,
            heartbeat_interval=self._heartbeat_interval,
            dead_after=self._dead_after,
        )
        for message in self._outbox.unsettled_outbound():
            core.enqueue(message)
        return core

    def enqueue(self, message: link.Outgoing) -> None:
        """A message was journaled: push it as soon as the window allows."""
        self.link.enqueue(message)
        self._wake.set()

    @property
    def queue_depth(self) -> int:
        return self.link.queue_depth

    async def run(self) -> None:
        """Connect, push, reconnect with jittered exponential backoff; until cancelled."""
        attempt = 0
        while not self._stop.is_set():
            channel = self._channel_factory()
            started = time.monotonic()
            try:
                await self._connection(channel)
                reason = "the peer closed the stream"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except ProtocolError as exc:
                reason = f"protocol error: {exc}"
            except Exception as exc:
                log.exception("link to %s failed", self.peer_party)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                await channel.close(grace=None)
            if self._stop.is_set():
                # A cancellation that arrives while the stream is failing can be absorbed by
                # the TaskGroup or grpc; the flag makes sure a stop request is honoured.
                return
            for _ in self.link.disconnect(reason):
                pass
            if self.status.up:
                self.status.went(False, time.time(), reason)
                await self._on_link(False, reason)
                log.warning("link to %s down: %s", self.peer_party, printable(reason))
            else:
                self.status.detail = reason
            if self._failed_settlement is not None:
                # a receipt could not be journaled: rebuild our view from the journal
                self._failed_settlement = None
                self.link = self._new_link()
            attempt = 0 if time.monotonic() - started > self._dead_after else attempt + 1
            delay = min(self._reconnect_max, self._reconnect_min * 2 ** min(attempt, 16))
            await asyncio.sleep(random.uniform(0, delay) if attempt else self._reconnect_min / 2)

    async def _connection(self, channel: grpc.aio.Channel) -> None:
        stub = peer_link_pb2_grpc.PeerLinkServiceStub(channel)
        call = stub.Push()
        await call.write(wire.sender_frame_to_wire(self.link.connect(time.time()), self._certs))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._reader(call))
                group.create_task(self._writer(call))
                group.create_task(self._ticker())
        except BaseExceptionGroup as failed:  # report the first failure, not the group
            raise failed.exceptions[0] from None
        finally:
            call.cancel()

    async def _reader(
        self, call: grpc.aio.StreamStreamCall[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse]
    ) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise ProtocolError("the peer ended the stream")
            assert isinstance(response, peer_link_pb2.PushResponse)
            frame = wire.receiver_frame_from_wire(
                response, self._keyring, receiver_party=self.peer_party, sender_party=self.party
            )
            for event in self.link.receive(frame, time.time()):
                await self._handle(event)
            self._wake.set()

    async def _handle(self, event: link.LinkEvent) -> None:
        if isinstance(event, link.LinkUp):
            self.status.went(True, time.time(), f"peer holds up to sequence {event.last_sequence}")
            log.info(
                "link to %s up (peer holds up to sequence %d)", self.peer_party, event.last_sequence
            )
            await self._on_link(True, self.status.detail)
        elif isinstance(event, link.Delivered):
            self._settle(self._outbox.record_receipt(event.receipt))
        elif isinstance(event, link.Refused):
            log.warning("peer refused %s: %s", event.message_id, printable(event.rejection.detail))
            self._settle(self._outbox.record_refused_by_peer(event.rejection))
        elif isinstance(event, link.Measured):
            self.status.rtt = event.rtt
            self.status.clock_offset = event.clock_offset

    def _settle(self, work: Awaitable[None]) -> None:
        """Journal a settlement without stalling the reader; the journal keeps their order."""

        async def run() -> None:
            try:
                await work
            except Exception as exc:
                log.exception("could not journal a settlement; the link will resynchronise")
                self._failed_settlement = exc

        task = asyncio.ensure_future(run())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _writer(
        self, call: grpc.aio.StreamStreamCall[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse]
    ) -> None:
        last_checkpoint = -math.inf  # the first is due as soon as the link is up (Welcome)
        while True:
            if self._failed_settlement is not None:
                raise ProtocolError("a settlement failed to journal")
            # Clear before taking frames: a message enqueued while we write sets it again.
            self._wake.clear()
            for frame in self.link.outgoing(time.time()):
                await call.write(wire.sender_frame_to_wire(frame, self._certs))
            if (
                self._checkpoints is not None
                and self.link.up
                and time.monotonic() - last_checkpoint >= self._checkpoint_interval
            ):
                last_checkpoint = time.monotonic()
                signed = self._checkpoints()
                if signed is not None:
                    await call.write(
                        peer_link_pb2.PushRequest(
                            checkpoint=peer_link_pb2.Checkpoint(checkpoint=signed)
                        )
                    )
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # arrives as the wait completes, which left this task unstoppable.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat_interval / 2):
                    await self._wake.wait()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self._heartbeat_interval / 2))
            events = self.link.tick(time.time())
            if events:
                reason = "; ".join(e.reason for e in events if isinstance(e, link.LinkDown))
                raise ProtocolError(reason or "link deadline passed")
