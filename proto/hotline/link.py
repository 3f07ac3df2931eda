"""The peer link's rules, with no I/O: sequences, receipts, resume, dedup, heartbeats.

One direction of the hot line is one `PeerLinkService.Push` stream: the *sender* gateway dials
the *receiver* gateway and pushes its outbox. This module holds both ends as plain classes
(in the style of h11 / wsproto): they take frames and the current time, and return frames and
events. They never read a clock, a socket or a file; the gRPC adapters in `server` and `client`
feed them, and `tests/link` joins two of them through a fake cable that drops, duplicates,
reorders, cuts and restarts, deterministically.

The rules (the normative text is in `proto/hotline/v1/peer_link.proto`):

* The sender opens each connection with `Hello(last_receipted_sequence=R)`: the highest
  sequence it holds a settlement (receipt or rejection) for. The receiver answers
  `Welcome(last_sequence=L, receipts/rejections for R+1..L)`, so a sender that lost receipts
  (crash, cut) learns what it missed before it sends anything new.
* A sequence number is assigned when a message is first transmitted on a connection: next is
  L+1, then +1 per delivery. Transmission order is precedence first (FLASH is never queued
  behind lower precedence), then journal order. So within one precedence, messages arrive in
  the order they were journaled; across precedences, higher ones overtake.
* The receiver accepts only sequence L+1. A sequence <= L whose message id matches the one held
  is answered with the stored receipt (idempotent resend). A gap is refused (OUT_OF_ORDER,
  consumes nothing; the sender reconnects). A known message id under a new sequence is refused
  as DUPLICATE_MESSAGE_ID with the original receipt attached, and consumes the sequence.
* Every accepted sequence gets exactly one durable journal entry at the receiver (the message,
  or the rejection), written before the receipt or rejection is sent.
* The sender keeps at most `window` unsettled deliveries in flight.
* Both ends ping every `heartbeat_interval` seconds; an end that receives nothing for
  `dead_after` seconds declares the link down.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from hotline import PROTOCOL_VERSION
from hotline.errors import LocalProtocolError, RemoteProtocolError

DEFAULT_WINDOW = 256
DEFAULT_HEARTBEAT_INTERVAL = 2.0
DEFAULT_DEAD_AFTER = 6.0
MAX_RESUME = 65536  # settlements a Welcome may carry


class RejectReason(Enum):
    """Why a receiver refused a delivery (mirrors `hotline.v1.RejectionReason`)."""

    INVALID_MESSAGE = "INVALID_MESSAGE"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    WRONG_PARTY = "WRONG_PARTY"
    DUPLICATE_MESSAGE_ID = "DUPLICATE_MESSAGE_ID"
    OUT_OF_ORDER = "OUT_OF_ORDER"
    NOT_RELEASABLE = "NOT_RELEASABLE"

    @property
    def consumes_sequence(self) -> bool:
        return self is not RejectReason.OUT_OF_ORDER


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Hello:
    party: str
    last_receipted_sequence: int
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ReceiptInfo:
    """What the link needs from a receipt; `signed` carries the wire form through untouched."""

    sequence: int
    message_id: str
    digest: bytes
    signed: object = field(default=None, compare=False)


@dataclass(frozen=True)
class Rejection:
    sequence: int
    message_id: str
    reason: RejectReason
    detail: str = ""
    original_receipt: ReceiptInfo | None = None
    violations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Welcome:
    party: str
    last_sequence: int
    receipts: tuple[ReceiptInfo, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Delivery:
    sequence: int
    message_id: str
    digest: bytes
    payload: object = field(default=None, compare=False)


@dataclass(frozen=True)
class Receipt:
    info: ReceiptInfo


@dataclass(frozen=True)
class Ping:
    nonce: int
    transmit_time: float


@dataclass(frozen=True)
class Pong:
    nonce: int
    origin_time: float
    receive_time: float
    transmit_time: float


SenderFrame = Hello | Delivery | Ping | Pong
ReceiverFrame = Welcome | Receipt | Rejection | Ping | Pong

# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Delivered:
    """The peer made the message durable and receipted it."""

    message_id: str
    receipt: ReceiptInfo


@dataclass(frozen=True)
class Refused:
    """The peer refused the message for good; it will not be resent."""

    message_id: str
    rejection: Rejection


@dataclass(frozen=True)
class LinkUp:
    last_sequence: int


@dataclass(frozen=True)
class LinkDown:
    reason: str


@dataclass(frozen=True)
class Measured:
    """A heartbeat round trip: RTT and the peer's clock offset (peer minus us), seconds."""

    rtt: float
    clock_offset: float


LinkEvent = Delivered | Refused | LinkUp | LinkDown | Measured


# --------------------------------------------------------------------------- heartbeat


@dataclass
class Heartbeat:
    """Ping schedule and liveness deadline for one end of a connection."""

    interval: float
    dead_after: float
    last_heard: float = 0.0
    last_ping: float = float("-inf")
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def heard(self, now: float) -> None:
        self.last_heard = now

    def due(self, now: float) -> Ping | None:
        if now - self.last_ping >= self.interval:
            self.last_ping = now
            return Ping(next(self._nonces), now)
        return None

    def dead(self, now: float) -> bool:
        return now - self.last_heard > self.dead_after

    @staticmethod
    def answer(ping: Ping, received: float, now: float) -> Pong:
        return Pong(ping.nonce, ping.transmit_time, received, now)

    @staticmethod
    def measure(pong: Pong, now: float) -> Measured:
        t1, t2, t3, t4 = pong.origin_time, pong.receive_time, pong.transmit_time, now
        return Measured(rtt=(t4 - t1) - (t3 - t2), clock_offset=((t2 - t1) + (t3 - t4)) / 2)


# --------------------------------------------------------------------------- sender


@dataclass(frozen=True)
class Outgoing:
    """A journaled outbound message waiting for its receipt.

    `rank` orders precedence (lower first: FLASH=1 ... ROUTINE=4); `order` is the journal
    position, which orders messages of the same precedence.
    """

    message_id: str
    rank: int
    order: int
    digest: bytes
    payload: object = field(default=None, compare=False)


class SenderState(Enum):
    IDLE = "idle"  # no connection
    HELLO_SENT = "hello-sent"  # waiting for Welcome
    OPEN = "open"


class OutboundLink:
    """The sending end of one direction: an outbox pushed to the peer, settled by receipts."""

    def __init__(
        self,
        party: str,
        peer_party: str,
        *,
        last_receipted_sequence: int = 0,
        window: int = DEFAULT_WINDOW,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = DEFAULT_DEAD_AFTER,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.party = party
        self.peer_party = peer_party
        self.window = window
        self.state = SenderState.IDLE
        self.last_settled = last_receipted_sequence
        self._next_sequence = 0
        self._pending: list[tuple[int, int, str]] = []  # heap of (rank, order, message_id)
        self._messages: dict[str, Outgoing] = {}  # every unsettled message
        self._in_flight: dict[int, str] = {}  # sequence -> message_id, this connection
        self._sent_at: dict[int, float] = {}  # sequence -> transmit time
        self._sequence_of: dict[str, int] = {}
        self._heartbeat = Heartbeat(heartbeat_interval, dead_after)
        self._pings: list[tuple[Ping, float]] = []

    # -- the outbox

    def enqueue(self, message: Outgoing) -> None:
        """Add a journaled message to the outbox (ignored if already queued)."""
        if message.message_id in self._messages:
            return
        self._messages[message.message_id] = message
        heapq.heappush(self._pending, (message.rank, message.order, message.message_id))

    @property
    def queue_depth(self) -> int:
        """Messages journaled here but not yet settled by the peer."""
        return len(self._messages)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def up(self) -> bool:
        return self.state is SenderState.OPEN

    # -- connection lifecycle

    def connect(self, now: float) -> Hello:
        """Start a new connection: everything unsettled will be resent after the Welcome."""
        self._requeue_in_flight()
        self.state = SenderState.HELLO_SENT
        self._heartbeat.heard(now)
        self._heartbeat.last_ping = now
        return Hello(self.party, self.last_settled)

    def disconnect(self, reason: str) -> list[LinkEvent]:
        was_up = self.state is SenderState.OPEN
        self._requeue_in_flight()
        self.state = SenderState.IDLE
        return [LinkDown(reason)] if was_up else []

    def _requeue_in_flight(self) -> None:
        for message_id in self._in_flight.values():
            message = self._messages.get(message_id)
            if message is not None:
                heapq.heappush(self._pending, (message.rank, message.order, message_id))
        self._in_flight.clear()
        self._sent_at.clear()
        self._sequence_of.clear()
        self._pings.clear()

    # -- input

    def receive(self, frame: ReceiverFrame, now: float) -> list[LinkEvent]:
        """Process one frame from the receiver; returns what happened."""
        self._heartbeat.heard(now)
        if self.state is SenderState.IDLE:
            raise LocalProtocolError("frame received with no connection open")
        if isinstance(frame, Welcome):
            return self._on_welcome(frame)
        if self.state is not SenderState.OPEN:
            raise RemoteProtocolError(f"expected Welcome first, got {type(frame).__name__}")
        if isinstance(frame, Receipt):
            return self._settle_receipt(frame.info, strict=True)
        if isinstance(frame, Rejection):
            return self._on_rejection(frame)
        if isinstance(frame, Pong):
            return [Heartbeat.measure(frame, now)]
        self._pings.append((frame, now))  # answered by the next outgoing()
        return []

    def _on_welcome(self, welcome: Welcome) -> list[LinkEvent]:
        if self.state is not SenderState.HELLO_SENT:
            raise RemoteProtocolError("Welcome received twice on one connection")
        if welcome.protocol_version != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"peer speaks protocol version {welcome.protocol_version}")
        if welcome.party != self.peer_party:
            raise RemoteProtocolError(
                f"peer says it is party {welcome.party}, expected {self.peer_party}"
            )
        if welcome.last_sequence < self.last_settled:
            raise RemoteProtocolError(
                f"peer holds up to sequence {welcome.last_sequence} but already receipted "
                f"{self.last_settled}: the peer's journal lost entries"
            )
        events: list[LinkEvent] = []
        for info in welcome.receipts:
            events += self._settle_receipt(info, strict=False)
        for rejection in welcome.rejections:
            events += self._settle_rejection(rejection)
        self.last_settled = welcome.last_sequence
        self._next_sequence = welcome.last_sequence + 1
        self.state = SenderState.OPEN
        events.insert(0, LinkUp(welcome.last_sequence))
        return events

    def _settle_receipt(self, info: ReceiptInfo, *, strict: bool) -> list[LinkEvent]:
        if strict:
            expected = self._in_flight.get(info.sequence)
            if expected is None:
                # A resend of a receipt we already settled is harmless.
                if info.sequence <= self.last_settled:
                    return []
                raise RemoteProtocolError(f"receipt for sequence {info.sequence} never sent")
            if expected != info.message_id:
                raise RemoteProtocolError(
                    f"receipt for sequence {info.sequence} names {info.message_id}, "
                    f"but {expected} was sent"
                )
            del self._in_flight[info.sequence]
            self._sent_at.pop(info.sequence, None)
        message = self._messages.pop(info.message_id, None)
        self._sequence_of.pop(info.message_id, None)
        self.last_settled = max(self.last_settled, info.sequence)
        if message is None:
            return []  # settled before (e.g. a receipt learned again after a restart)
        if message.digest != info.digest:
            raise RemoteProtocolError(
                f"receipt for {info.message_id} covers different bytes than were sent"
            )
        return [Delivered(info.message_id, info)]

    def _on_rejection(self, rejection: Rejection) -> list[LinkEvent]:
        if rejection.reason is RejectReason.OUT_OF_ORDER:
            raise LocalProtocolError(
                f"peer refused sequence {rejection.sequence} as out of order: {rejection.detail}"
            )
        sent = self._in_flight.pop(rejection.sequence, None)
        self._sent_at.pop(rejection.sequence, None)
        if sent is None:
            if rejection.sequence <= self.last_settled:
                return []
            raise RemoteProtocolError(f"rejection for sequence {rejection.sequence} never sent")
        if sent != rejection.message_id:
            raise RemoteProtocolError(
                f"rejection for sequence {rejection.sequence} names {rejection.message_id}, "
                f"but {sent} was sent"
            )
        return self._settle_rejection(rejection)

    def _settle_rejection(self, rejection: Rejection) -> list[LinkEvent]:
        self.last_settled = max(self.last_settled, rejection.sequence)
        if rejection.reason is RejectReason.DUPLICATE_MESSAGE_ID:
            if rejection.original_receipt is None:
                raise RemoteProtocolError("DUPLICATE_MESSAGE_ID without the original receipt")
            message = self._messages.pop(rejection.message_id, None)
            if message is None:
                return []
            return [Delivered(rejection.message_id, rejection.original_receipt)]
        message = self._messages.pop(rejection.message_id, None)
        if message is None:
            return []
        return [Refused(rejection.message_id, rejection)]

    # -- output

    def outgoing(self, now: float) -> list[SenderFrame]:
        """Frames to transmit now: pongs owed, deliveries up to the window, a heartbeat."""
        frames: list[SenderFrame] = [Heartbeat.answer(p, got, now) for p, got in self._pings]
        self._pings.clear()
        if self.state is not SenderState.OPEN:
            return frames
        while self._pending and len(self._in_flight) < self.window:
            _, _, message_id = heapq.heappop(self._pending)
            message = self._messages.get(message_id)
            if message is None or message_id in self._sequence_of:
                continue  # settled meanwhile, or a stale heap entry
            sequence = self._next_sequence
            self._next_sequence += 1
            self._in_flight[sequence] = message_id
            self._sent_at[sequence] = now
            self._sequence_of[message_id] = sequence
            frames.append(Delivery(sequence, message_id, message.digest, message.payload))
        ping = self._heartbeat.due(now)
        if ping is not None:
            frames.append(ping)
        return frames

    def tick(self, now: float) -> list[LinkEvent]:
        """Check the deadlines; when one expires the adapter must drop the connection.

        Two deadlines, both `dead_after`: nothing heard from the peer at all, and the oldest
        delivery in flight still unsettled (a stream that stays open but stopped settling,
        e.g. a receiver whose disk hangs, is as dead as a silent one).
        """
        if self.state is SenderState.IDLE:
            return []
        limit = self._heartbeat.dead_after
        if self._heartbeat.dead(now):
            return self.disconnect(f"no frame from the peer for {limit:g} s")
        if self._sent_at:
            oldest = min(self._sent_at)
            if now - self._sent_at[oldest] > limit:
                return self.disconnect(f"no receipt for sequence {oldest} within {limit:g} s")
        return []


# --------------------------------------------------------------------------- receiver


class SettlementStore(Protocol):
    """What the receiving end needs to read from its journal (the journal satisfies it)."""

    def last_sequence(self, sender_party: str) -> int: ...

    def settlement_for_sequence(
        self, sender_party: str, sequence: int
    ) -> ReceiptInfo | Rejection | None: ...

    def receipt_for_message(self, message_id: str) -> ReceiptInfo | None: ...

    def settlements_after(
        self, sender_party: str, sequence: int
    ) -> Iterable[ReceiptInfo | Rejection]: ...


@dataclass(frozen=True)
class Accept:
    """Journal this delivery (after validating and verifying it), then send its receipt."""

    delivery: Delivery


@dataclass(frozen=True)
class Refuse:
    """Send this rejection; journal it first if it consumes the sequence."""

    rejection: Rejection


@dataclass(frozen=True)
class Resend:
    """An idempotent resend: answer with the stored settlement, journal nothing."""

    frame: Receipt | Rejection


Decision = Accept | Refuse | Resend


class InboundLink:
    """The receiving end of one connection: orders, deduplicates and settles deliveries.

    Create one per connection, after every journal write of the previous connection from the
    same peer has finished, so that `store.last_sequence` is exact.
    """

    def __init__(
        self,
        party: str,
        peer_party: str,
        store: SettlementStore,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = DEFAULT_DEAD_AFTER,
    ) -> None:
        self.party = party
        self.peer_party = peer_party
        self._store = store
        self._expected = 0  # set by the Hello
        self._welcomed = False
        self._in_progress: dict[str, int] = {}  # message id -> sequence, accepted not yet durable
        self._heartbeat = Heartbeat(heartbeat_interval, dead_after)

    @property
    def last_sequence(self) -> int:
        return self._expected - 1

    def hello(self, hello: Hello, now: float) -> Welcome:
        self._heartbeat.heard(now)
        self._heartbeat.last_ping = now
        if self._welcomed:
            raise RemoteProtocolError("Hello sent twice on one stream")
        if hello.protocol_version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"protocol version {hello.protocol_version} is not supported "
                f"(this gateway speaks {PROTOCOL_VERSION})"
            )
        if hello.party != self.peer_party:
            raise RemoteProtocolError(
                f"Hello claims party {hello.party}, but the peer is party {self.peer_party}"
            )
        last = self._store.last_sequence(self.peer_party)
        if hello.last_receipted_sequence > last:
            raise RemoteProtocolError(
                f"sender claims receipts up to {hello.last_receipted_sequence}, "
                f"but this journal holds only up to {last}"
            )
        if last - hello.last_receipted_sequence > MAX_RESUME:
            raise RemoteProtocolError(
                f"sender holds settlements only up to {hello.last_receipted_sequence} of {last}: "
                "more than a resume can carry; its journal was lost"
            )
        self._expected = last + 1
        self._welcomed = True
        receipts: list[ReceiptInfo] = []
        rejections: list[Rejection] = []
        for item in self._store.settlements_after(self.peer_party, hello.last_receipted_sequence):
            if isinstance(item, ReceiptInfo):
                receipts.append(item)
            else:
                rejections.append(item)
        return Welcome(self.party, last, tuple(receipts), tuple(rejections))

    def delivery(self, delivery: Delivery, now: float) -> Decision:
        self._heartbeat.heard(now)
        if not self._welcomed:
            raise RemoteProtocolError("Delivery before Hello")
        seq = delivery.sequence
        if seq < self._expected:
            return self._resend(delivery)
        if seq > self._expected:
            return Refuse(
                Rejection(
                    seq,
                    delivery.message_id,
                    RejectReason.OUT_OF_ORDER,
                    f"expected sequence {self._expected}, got {seq}",
                )
            )
        self._expected += 1
        if not delivery.message_id:
            # Unverified content has no trustworthy id: the adapter refuses it anyway.
            return Accept(delivery)
        original = self._store.receipt_for_message(delivery.message_id)
        if original is not None or delivery.message_id in self._in_progress:
            detail = "message id already received"
            if original is None:
                detail += f" under sequence {self._in_progress[delivery.message_id]}"
            return Refuse(
                Rejection(
                    seq,
                    delivery.message_id,
                    RejectReason.DUPLICATE_MESSAGE_ID,
                    detail,
                    original_receipt=original,
                )
            )
        self._in_progress[delivery.message_id] = seq
        return Accept(delivery)

    def settled(self, message_id: str) -> None:
        """An accepted delivery was journaled (or refused after all): forget it is in progress."""
        self._in_progress.pop(message_id, None)

    def _resend(self, delivery: Delivery) -> Decision:
        held = self._store.settlement_for_sequence(self.peer_party, delivery.sequence)
        if held is None:
            # Accepted on this stream but not yet durable: its settlement is on its way.
            if self._in_progress.get(delivery.message_id) == delivery.sequence:
                raise RemoteProtocolError(
                    f"sequence {delivery.sequence} resent before its receipt on the same stream"
                )
            raise LocalProtocolError(f"no settlement held for sequence {delivery.sequence}")
        if held.message_id != delivery.message_id:
            return Refuse(
                Rejection(
                    delivery.sequence,
                    delivery.message_id,
                    RejectReason.OUT_OF_ORDER,
                    f"sequence {delivery.sequence} already carried message {held.message_id}",
                )
            )
        if isinstance(held, ReceiptInfo):
            if held.digest != delivery.digest:
                return Refuse(
                    Rejection(
                        delivery.sequence,
                        delivery.message_id,
                        RejectReason.OUT_OF_ORDER,
                        "resent bytes differ from those held for this sequence",
                    )
                )
            return Resend(Receipt(held))
        return Resend(held)

    def ping(self, ping: Ping, now: float) -> Pong:
        self._heartbeat.heard(now)
        return Heartbeat.answer(ping, now, now)

    def pong(self, pong: Pong, now: float) -> Measured:
        self._heartbeat.heard(now)
        return Heartbeat.measure(pong, now)

    def ping_due(self, now: float) -> Ping | None:
        return self._heartbeat.due(now) if self._welcomed else None

    def dead(self, now: float) -> bool:
        return self._heartbeat.dead(now)
