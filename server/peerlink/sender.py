"""The sending end of a peer link: dial the peer gateway and push our outbox.

A thin adapter around `hotline.link.OutboundLink`: it owns the gRPC stream, the clock and the
reconnect loop, and carries out the core's actions (`Send` a frame, `Persist` a settlement,
report an `Event`); every rule lives in the core. It needs from the gateway only an `Outbox`
(`server.peerlink.ports`, which the gateway's journal-backed store satisfies).

One connection runs three tasks under one `asyncio.TaskGroup` (reader, writer, driver), so a
failure of any ends all three and the loop reconnects after a jittered exponential backoff.
Frames leave through one queue and one writer (grpc allows one write at a time), in the order
the core emitted them.

Nothing a receiver sends is believed before it is verified: `hotline.wire` checks the Welcome's
signature over our Hello's nonce and every batch receipt's signature; a frame that fails is a
protocol violation, journaled as a SECURITY event, and ends the stream without changing state.

Before each connection attempt, an optional `vet_peer` (the gateway passes
`peer_certificate.read_peer_certificate`) checks the peer's TLS certificate; if it fails, the
attempt fails like a lost connection, and each distinct reason is logged and, for a refused
certificate, reported to `on_peer_refused` once, not on every retry. `redial(error)` ends the
connection in progress so that the next attempt checks again (the gateway calls it when a
reloaded revocation list lists the certificate checked before the current connection).

When a Welcome shows that the peer holds messages of ours our journal has no record of (the
core's `JournalLost`: our journal was deleted, replaced or restored from an old copy), the
connection ends, `on_journal_lost` is told once, and the sender stops dialling: nothing more
is pushed until the journal is recovered and the gateway restarted (`held` says why).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from hotline import link, wire
from hotline.errors import ProtocolError, RemoteProtocolError
from hotline.signing import KeyRing
from hotline.v1 import common_pb2, peer_link_pb2, peer_link_pb2_grpc
from server.peerlink.peer_certificate import PeerCertificateError, PeerCertificateRefused
from server.peerlink.ports import Outbox
from server.peerlink.reasons import in_words
from server.peerlink.status import LinkStatus, printable

log = logging.getLogger("hotline.link.out")

LinkNotice = Callable[[bool, str], Awaitable[None]]
SecurityNotice = Callable[[str], Awaitable[None]]
PeerRefusedNotice = Callable[[PeerCertificateRefused], Awaitable[None]]
URGENT_RANK = common_pb2.PRECEDENCE_IMMEDIATE  # this precedence and higher are sent at once
JournalLostNotice = Callable[[link.JournalLost], Awaitable[None]]
Call = grpc.aio.StreamStreamCall[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse]


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
        on_violation: SecurityNotice | None = None,
        window: int = link.DEFAULT_WINDOW,
        lanes: dict[int, int] | None = None,
        batch_count: int = link.DEFAULT_BATCH_COUNT,
        heartbeat_interval: float = link.DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = link.DEFAULT_DEAD_AFTER,
        reconnect_min: float = 0.2,
        reconnect_max: float = 10.0,
        checkpoints: Callable[[], common_pb2.SignedPayload | None] | None = None,
        checkpoint_interval: float = 60.0,
        vet_peer: Callable[[], Awaitable[object]] | None = None,
        on_peer_refused: PeerRefusedNotice | None = None,
        on_journal_lost: JournalLostNotice | None = None,
    ) -> None:
        self.party = party
        self.peer_party = peer_party
        self._outbox = outbox
        self._keyring = keyring
        self._certs = signing_certificates
        self._channel_factory = channel_factory
        self._on_link = on_link
        self._on_violation = on_violation
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self._window = window
        self._lanes = lanes
        self._batch_count = batch_count
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._checkpoints = checkpoints
        self._checkpoint_interval = checkpoint_interval
        self._wake = asyncio.Event()
        self.status = LinkStatus()
        self.link = self._new_link()
        self._queue: asyncio.Queue[peer_link_pb2.PushRequest] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._failed_settlement: BaseException | None = None
        self._down: str = ""  # the core declared the link down: why
        self._checkpoint_due = 0.0  # monotonic time of the next checkpoint (0: at link up)
        self._stop = asyncio.Event()
        self._vet_peer = vet_peer
        self._on_peer_refused = on_peer_refused
        self._on_journal_lost = on_journal_lost
        self._vet_failure = ""  # the last reason vetting failed, so each is reported once
        self._redial: PeerCertificateError | None = None
        self._logged_down = ""  # the reason last logged as "link down" ("" while up)

    def redial(self, why: PeerCertificateError) -> None:
        """End the current connection, if any, with `why`; the next attempt checks the peer."""
        self._redial = why
        self._wake.set()

    def stop(self) -> None:
        """Ask the sender to stop: `run` returns at its next step (cancel it too)."""
        self._stop.set()

    def _new_link(self) -> link.OutboundLink:
        core = link.OutboundLink(
            self.party,
            self.peer_party,
            last_receipted_sequence=self._outbox.last_settled_outbound(),
            window=self._window,
            lanes=self._lanes,
            batch_count=self._batch_count,
            heartbeat_interval=self._heartbeat_interval,
            dead_after=self._dead_after,
            journal_hash_at=self._outbox.journal_hash_at,
        )
        for message in self._outbox.unsettled_outbound():
            core.enqueue(message)
        return core

    def enqueue(self, message: link.Outgoing) -> None:
        """A message was journaled: push it as soon as its lane allows.

        FLASH and IMMEDIATE go out from here, at once (the driver task would run only after
        everything already queued on a busy event loop); the lower precedences are left to the
        driver, so that messages journaled together leave in one batch."""
        self.link.enqueue(message)
        if message.rank <= URGENT_RANK and self._queue is not None:
            self.link.tick(time.time())
            self._pump()
        else:
            self._wake.set()

    @property
    def queue_depth(self) -> int:
        return self.link.queue_depth

    @property
    def held(self) -> str:
        """Why sending is held ("" if it is not): our journal lost history the peer holds."""
        lost = self.link.lost
        return "" if lost is None else lost.detail

    # ------------------------------------------------------------------ connections

    async def run(self) -> None:
        """Connect, push, reconnect with jittered exponential backoff; until cancelled."""
        attempt = 0
        while not self._stop.is_set():
            channel = self._channel_factory()
            started = time.monotonic()
            self._redial = None  # a connection not yet made is checked anyway
            vetted = False
            try:
                await self._vet()
                await self._connection(channel)
                reason = "the peer closed the stream"
            except asyncio.CancelledError:
                raise
            except PeerCertificateError as exc:
                reason = str(exc)
                vetted = True  # `_vet` has logged it, once per reason
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                # expected network faults: one line in words, no traceback
                reason = in_words(exc)
            except RemoteProtocolError as exc:
                # the peer chose parts of this text: bounded and escaped before anyone sees it
                reason = f"protocol violation by the peer: {printable(str(exc), 500)}"
                if self._on_violation is not None:
                    await self._on_violation(str(exc))
            except ProtocolError as exc:
                reason = f"protocol error: {exc}"
            except Exception as exc:
                log.exception("link to %s failed", self.peer_party)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._queue = None
                await channel.close(grace=None)
            if self._stop.is_set():
                # A cancellation that arrives while the stream is failing can be absorbed by
                # the TaskGroup or grpc; the flag makes sure a stop request is honoured.
                return
            self.link.disconnect(reason)
            self.link.drain()  # the LinkDown event is reported below, once
            was_up = self.status.up
            if self.status.up:
                self.status.went(False, time.time(), reason)
                await self._on_link(False, reason)
            else:
                self.status.detail = reason
            if reason != self._logged_down:  # once per change of reason, not per attempt
                self._logged_down = reason
                if not vetted:
                    log.warning("link to %s down: %s", self.peer_party, printable(reason))
            if self.link.lost is not None:
                await self._journal_lost(self.link.lost)
                return
            if self._failed_settlement is not None:
                # a settlement could not be journaled: rebuild our view from the journal
                self._failed_settlement = None
                await self._settled()
                self.link = self._new_link()
            # a link that came up and lasted resets the backoff; a failed attempt grows it
            lasted = was_up and time.monotonic() - started > self._dead_after
            attempt = 0 if lasted else attempt + 1
            delay = min(self._reconnect_max, self._reconnect_min * 2 ** min(attempt, 16))
            await asyncio.sleep(random.uniform(0, delay) if attempt else self._reconnect_min / 2)

    async def _journal_lost(self, lost: link.JournalLost) -> None:
        """Hold the sending end: report once, then dial no more (until a restart)."""
        self.status.detail = f"sending held: {lost.detail}"
        log.critical(
            "DATA LOSS: %s. Sending to %s is held: no message is pushed and Send is refused "
            'until this journal is recovered (see README: "Recovering a lost journal") and '
            "the gateway restarted",
            printable(lost.detail),
            self.peer_party,
        )
        if self._on_journal_lost is not None:
            await self._on_journal_lost(lost)

    async def _vet(self) -> None:
        """Check the peer before the channel is used; raise `PeerCertificateError` if it fails."""
        if self._vet_peer is None:
            return
        try:
            await self._vet_peer()
        except PeerCertificateError as exc:
            if str(exc) == self._vet_failure:
                raise
            self._vet_failure = str(exc)
            if not isinstance(exc, PeerCertificateRefused):
                log.info("not dialling %s: %s", self.peer_party, printable(str(exc)))
                raise
            log.error("not dialling %s: %s", self.peer_party, printable(str(exc)))
            if self._on_peer_refused is not None:
                await self._on_peer_refused(exc)
            raise
        self._vet_failure = ""

    async def _settled(self) -> None:
        """Wait for the journal writes already submitted."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _connection(self, channel: grpc.aio.Channel) -> None:
        stub = peer_link_pb2_grpc.PeerLinkServiceStub(channel)
        call = stub.Push()
        self._queue = asyncio.Queue()
        self._down = ""
        self._checkpoint_due = 0.0
        self.link.connect(time.time(), secrets.token_bytes(link.NONCE_BYTES))
        self._pump()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._reader(call))
                group.create_task(self._writer(call, self._queue))
                group.create_task(self._driver())
        except BaseExceptionGroup as failed:  # report the first failure, not the group
            raise failed.exceptions[0] from None
        finally:
            call.cancel()

    # ------------------------------------------------------------------ the three tasks

    async def _reader(self, call: Call) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise ProtocolError("the peer ended the stream")
            assert isinstance(response, peer_link_pb2.PushResponse)
            frame = wire.receiver_frame_from_wire(
                response, self._keyring, receiver_party=self.peer_party, sender_party=self.party
            )
            now = time.time()
            self.link.receive(frame, now)
            self.link.tick(now)  # a batch receipt frees allowance: send more at once
            self._pump()

    async def _writer(self, call: Call, queue: asyncio.Queue[peer_link_pb2.PushRequest]) -> None:
        while True:
            frame = await queue.get()
            await call.write(frame)

    async def _driver(self) -> None:
        """Time and wake-ups: ticks the core (batches, heartbeats, deadlines), checkpoints."""
        while True:
            if self._failed_settlement is not None:
                raise ProtocolError("a settlement failed to journal")
            if self._down:
                raise ProtocolError(self._down)
            if self._redial is not None:
                raise self._redial
            # Clear before ticking: a message enqueued while we work sets it again.
            self._wake.clear()
            self.link.tick(time.time())
            self._pump()
            self._checkpoint()
            try:
                async with asyncio.timeout(min(0.5, self._heartbeat_interval / 2)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _checkpoint(self) -> None:
        if self._checkpoints is None or not self.link.up or self._queue is None:
            return
        now = time.monotonic()
        if now < self._checkpoint_due:
            return
        self._checkpoint_due = now + self._checkpoint_interval
        signed = self._checkpoints()
        if signed is not None:
            self._queue.put_nowait(
                peer_link_pb2.PushRequest(checkpoint=peer_link_pb2.Checkpoint(checkpoint=signed))
            )

    # ------------------------------------------------------------------ actions

    def _pump(self) -> None:
        """Carry out the core's actions, in order."""
        for action in self.link.drain():
            if isinstance(action, link.Send):
                if self._queue is not None:
                    frame = action.frame
                    assert not isinstance(frame, link.Welcome | link.BatchReceipt)
                    self._queue.put_nowait(wire.sender_frame_to_wire(frame, self._certs))
            elif isinstance(action, link.Persist):
                record = action.record
                assert isinstance(record, link.SettleOutbound)
                self._persist(action.token, record)
            else:
                self._event(action.event)

    def _persist(self, token: int, plan: link.SettleOutbound) -> None:
        for item in plan.refused:
            log.warning(
                "peer refused %s: %s %s",
                item.message_id,
                item.reason.value,
                printable(item.detail),
            )
        durable = asyncio.ensure_future(self._outbox.record_settlement(plan))
        core = self.link

        def done(future: asyncio.Future[None]) -> None:
            self._background.discard(future)
            if future.cancelled() or future.exception() is not None:
                log.error(
                    "could not journal a settlement; the link will resynchronise: %s",
                    "cancelled" if future.cancelled() else future.exception(),
                )
                self._failed_settlement = future.exception() or asyncio.CancelledError()
                self._wake.set()
                return
            if core is self.link:
                core.persisted(token)
                self._pump()

        self._background.add(durable)
        durable.add_done_callback(done)

    def _event(self, event: link.LinkEvent) -> None:
        if isinstance(event, link.LinkUp):
            self._logged_down = ""
            self.status.went(
                True,
                time.time(),
                f"the peer held up to sequence {event.last_sequence} when the link came up",
            )
            log.info(
                "link to %s up (peer holds up to sequence %d)", self.peer_party, event.last_sequence
            )
            self._background_task(self._on_link(True, self.status.detail))
            self._wake.set()  # the first checkpoint goes out now
        elif isinstance(event, link.LinkDown):
            self._down = event.reason
            self._wake.set()
        elif isinstance(event, link.JournalLost):
            self._down = f"sending held: {event.detail}"
            self._wake.set()
        else:
            self.status.rtt = event.rtt
            self.status.clock_offset = event.clock_offset

    def _background_task(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
