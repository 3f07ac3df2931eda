"""The sending end of a peer link: dial the peer gateway and push our outbox, lane by lane.

A thin adapter around one `hotline.link.OutboundLink` per lane (precedence): it owns the gRPC
streams, the clock and the reconnect loop, and carries out the cores' actions (`Send` a frame,
`Persist` a settlement, report an `Event`); every rule lives in the cores. It needs from the
gateway only an `Outbox` (`server.peerlink.ports`, which the gateway's journal-backed store
satisfies). A message goes to the core of its precedence; an UPDATE or CANCEL of a message
unsettled on another lane waits for it there, and that message is hurried on its own lane
(LINK-13).

One connection opens one `Push` stream per lane on one channel and runs a reader and a writer
per stream and one driver, all under one `asyncio.TaskGroup`, so a failure of any ends them all
(every lane reconnects together, after a jittered exponential backoff). Frames of a lane leave
through its queue and its writer (grpc allows one write at a time per stream), in the order its
core emitted them. The link is up once every lane's Welcome is verified.

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
import contextlib
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
from server.peerlink.status import LinkStatus, by_lane, printable

log = logging.getLogger("hotline.link.out")

LinkNotice = Callable[[bool, str], Awaitable[None]]
SecurityNotice = Callable[[str], Awaitable[None]]
PeerRefusedNotice = Callable[[PeerCertificateRefused], Awaitable[None]]
JournalLostNotice = Callable[[link.JournalLost], Awaitable[None]]
Call = grpc.aio.StreamStreamCall[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse]


class PeerSender:
    """Pushes the outbox to the peer gateway over one `Push` stream per lane."""

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
        self.cores: dict[int, link.OutboundLink] = self._new_cores()
        self._queues: dict[int, asyncio.Queue[peer_link_pb2.PushRequest]] = {}
        self._up_lanes: set[int] = set()
        # Set while no FLASH is in flight; the other lanes settle their batch receipts only
        # then, so that the FLASH's settlement does not wait behind theirs in our journal.
        self._flash_idle = asyncio.Event()
        self._flash_idle.set()
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

    def _new_cores(self) -> dict[int, link.OutboundLink]:
        allowances = {**link.DEFAULT_LANES, **(self._lanes or {})}
        cores: dict[int, link.OutboundLink] = {}
        for lane in link.LANES:
            cores[lane] = link.OutboundLink(
                self.party,
                self.peer_party,
                lane=lane,
                last_receipted_sequence=self._outbox.last_settled_outbound(lane),
                window=min(self._window, allowances[lane]),
                lanes=self._lanes,
                batch_count=self._batch_count,
                heartbeat_interval=self._heartbeat_interval,
                dead_after=self._dead_after,
                # the witnessed checkpoint is of the journal, not of a lane: checked once, on
                # the lane whose Welcome also finds our lost ROUTINE messages (LINK-28)
                journal_hash_at=self._outbox.journal_hash_at if lane == link.ROUTINE_LANE else None,
                unsettled_elsewhere=self._elsewhere_than(lane),
            )
        self.cores = cores
        for message in self._outbox.unsettled_outbound():
            self._route(message)
        return cores

    def _gate(self) -> None:
        """No lane sends batches before every higher lane is open (when the link comes up the
        FLASH backlog leaves first: each lane's Welcome arrives in its own time), nor while a
        FLASH is in flight (both gateways' CPUs then serve the FLASH, not new ROUTINE work;
        the batches already sent go on)."""
        flash = self.cores[link.LANES[0]]
        flash_in_flight = flash.in_flight > 0
        higher_open = True
        for lane in link.LANES:
            core = self.cores[lane]
            core.paused = not higher_open or (flash_in_flight and core is not flash)
            higher_open = higher_open and core.up

    def _note_flash(self) -> None:
        """A FLASH is in flight until its settlement is durable: until then the other lanes'
        batch receipts wait (`_reader`), so that its settlement and its event are not queued
        behind theirs in our journal and event loop."""
        flash = self.cores[link.LANES[0]]
        if flash.in_flight or flash.settling:
            self._flash_idle.clear()
        else:
            self._flash_idle.set()

    def _elsewhere_than(self, lane: int) -> Callable[[str], bool]:
        def unsettled_elsewhere(message_id: str) -> bool:
            return any(
                core.holds(message_id) for other, core in self.cores.items() if other != lane
            )

        return unsettled_elsewhere

    def _lane_holding(self, message_id: str) -> int | None:
        return next((lane for lane, core in self.cores.items() if core.holds(message_id)), None)

    def _route(self, message: link.Outgoing) -> int:
        """Put a message on its lane; hurry what it refers to on the others (LINK-13)."""
        lane = message.rank if message.rank in link.LANES else link.ROUTINE_LANE
        self.cores[lane].enqueue(message)
        self._hurry(message.after, lane)
        return lane

    def _hurry(self, message_id: str, lane: int) -> None:
        """The chain a message refers to, unsettled on other lanes: each goes next on its own."""
        visited: set[str] = set()
        while message_id and message_id not in visited:
            visited.add(message_id)
            holder = self._lane_holding(message_id)
            if holder is None:
                return
            core = self.cores[holder]
            if holder != lane:
                core.hurry(message_id)
            held = core.message(message_id)
            message_id, lane = (held.after if held else ""), holder

    def enqueue(self, message: link.Outgoing) -> None:
        """A message was journaled: push it as soon as its lane allows.

        FLASH and IMMEDIATE go out from here, at once (the driver task would run only after
        everything already queued on a busy event loop); the lower precedences are left to the
        driver, so that messages journaled together leave in one batch."""
        lane = self._route(message)
        if lane in link.URGENT_LANES and lane in self._queues:
            self._gate()
            self.cores[lane].tick(time.time())
            self._pump(lane)
        if message.after or lane not in link.URGENT_LANES:
            self._wake.set()

    @property
    def queue_depth(self) -> int:
        return sum(core.queue_depth for core in self.cores.values())

    @property
    def lanes_in_flight(self) -> dict[int, int]:
        """Deliveries in flight per lane (for metrics)."""
        return {lane: core.in_flight for lane, core in self.cores.items()}

    @property
    def last_settled(self) -> int:
        """Deliveries settled on this direction: the sum of the lanes' last settled sequences."""
        return sum(core.last_settled for core in self.cores.values())

    @property
    def lost(self) -> link.JournalLost | None:
        return next((c.lost for c in self.cores.values() if c.lost is not None), None)

    @property
    def held(self) -> str:
        """Why sending is held ("" if it is not): our journal lost history the peer holds."""
        lost = self.lost
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
                self._queues = {}
                await channel.close(grace=None)
            if self._stop.is_set():
                # A cancellation that arrives while the stream is failing can be absorbed by
                # the TaskGroup or grpc; the flag makes sure a stop request is honoured.
                return
            for core in self.cores.values():
                core.disconnect(reason)
                core.drain()  # the LinkDown event is reported below, once
            self._flash_idle.set()
            self._up_lanes.clear()
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
            lost = self.lost
            if lost is not None:
                await self._journal_lost(lost)
                return
            if self._failed_settlement is not None:
                # a settlement could not be journaled: rebuild our view from the journal
                self._failed_settlement = None
                await self._settled()
                self._new_cores()
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
        calls = {lane: stub.Push() for lane in link.LANES}
        self._queues = {lane: asyncio.Queue() for lane in link.LANES}
        self._down = ""
        self._checkpoint_due = 0.0
        now = time.time()
        for lane, core in self.cores.items():
            core.connect(now, secrets.token_bytes(link.NONCE_BYTES))
            self._pump(lane)
        for core in self.cores.values():  # hurried messages went back to journal order
            for message_id, lane in core.references_elsewhere():
                self._hurry(message_id, lane)
        try:
            async with asyncio.TaskGroup() as group:
                for lane, call in calls.items():
                    group.create_task(self._reader(lane, call))
                    group.create_task(self._writer(call, self._queues[lane]))
                group.create_task(self._driver())
        except BaseExceptionGroup as failed:  # report the first failure, not the group
            raise failed.exceptions[0] from None
        finally:
            for call in calls.values():
                call.cancel()

    # ------------------------------------------------------------------ the tasks

    async def _reader(self, lane: int, call: Call) -> None:
        core = self.cores[lane]
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise ProtocolError("the peer ended the stream")
            assert isinstance(response, peer_link_pb2.PushResponse)
            if (
                lane != link.LANES[0]
                and not self._flash_idle.is_set()
                and response.WhichOneof("frame") == "batch_receipt"
            ):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._dead_after / 4):
                        await self._flash_idle.wait()
            frame = wire.receiver_frame_from_wire(
                response, self._keyring, receiver_party=self.peer_party, sender_party=self.party
            )
            now = time.time()
            settled = core.queue_depth
            core.receive(frame, now)
            self._gate()
            core.tick(now)  # a batch receipt frees allowance: send more at once
            self._pump(lane)
            if core.queue_depth != settled:
                self._wake.set()  # an UPDATE on another lane may have waited for one of these

    async def _writer(self, call: Call, queue: asyncio.Queue[peer_link_pb2.PushRequest]) -> None:
        while True:
            frame = await queue.get()
            await call.write(frame)

    async def _driver(self) -> None:
        """Time and wake-ups: ticks the cores (batches, heartbeats, deadlines), checkpoints."""
        while True:
            if self._failed_settlement is not None:
                raise ProtocolError("a settlement failed to journal")
            if self._down:
                raise ProtocolError(self._down)
            if self._redial is not None:
                raise self._redial
            # Clear before ticking: a message enqueued while we work sets it again.
            self._wake.clear()
            now = time.time()
            self._gate()
            for lane, core in self.cores.items():
                core.tick(now)
                self._pump(lane)
            self._checkpoint()
            try:
                async with asyncio.timeout(min(0.5, self._heartbeat_interval / 2)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _checkpoint(self) -> None:
        """A checkpoint when due, on the ROUTINE lane's stream (it never delays a FLASH)."""
        queue = self._queues.get(link.ROUTINE_LANE)
        if self._checkpoints is None or not self.status.up or queue is None:
            return
        now = time.monotonic()
        if now < self._checkpoint_due:
            return
        self._checkpoint_due = now + self._checkpoint_interval
        signed = self._checkpoints()
        if signed is not None:
            queue.put_nowait(
                peer_link_pb2.PushRequest(checkpoint=peer_link_pb2.Checkpoint(checkpoint=signed))
            )

    # ------------------------------------------------------------------ actions

    def _pump(self, lane: int) -> None:
        """Carry out a lane's core's actions, in order."""
        core = self.cores[lane]
        queue = self._queues.get(lane)
        if lane == link.LANES[0]:
            self._note_flash()
        for action in core.drain():
            if isinstance(action, link.Send):
                if queue is not None:
                    frame = action.frame
                    assert not isinstance(frame, link.Welcome | link.BatchReceipt)
                    queue.put_nowait(wire.sender_frame_to_wire(frame, self._certs))
            elif isinstance(action, link.Persist):
                record = action.record
                assert isinstance(record, link.SettleOutbound)
                self._persist(core, action.token, record)
            else:
                self._event(action.event)

    def _persist(self, core: link.OutboundLink, token: int, plan: link.SettleOutbound) -> None:
        for item in plan.refused:
            log.warning(
                "peer refused %s: %s %s",
                item.message_id,
                item.reason.value,
                printable(item.detail),
            )
        durable = asyncio.ensure_future(self._outbox.record_settlement(plan))

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
            if self.cores.get(core.lane) is core:
                core.persisted(token)
                self._pump(core.lane)

        self._background.add(durable)
        durable.add_done_callback(done)

    def _event(self, event: link.LinkEvent) -> None:
        if isinstance(event, link.LinkUp):
            self._up_lanes.add(event.lane)
            self._wake.set()  # a lower lane may start now
            if self._up_lanes != set(link.LANES) or self.status.up:
                return
            self._logged_down = ""
            held = by_lane({lane: core.last_settled for lane, core in self.cores.items()})
            self.status.went(
                True, time.time(), f"the peer held up to sequences {held} when the link came up"
            )
            log.info("link to %s up (the peer holds up to sequences %s)", self.peer_party, held)
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
