"""The peer link's rules, with no I/O: sequences, batches, lanes, settlements, resume, heartbeats.

One direction of the hot line is one `PeerLinkService.Push` stream: the *sender* gateway dials
the *receiver* gateway and pushes its outbox. This module holds both ends as plain classes (in
the style of h11 / wsproto) with the same shape:

    receive(frame, now)        a frame from the other end (already signature-checked by `wire`)
    tick(now)                  time passed: heartbeats, deadlines, batches to send
    persisted(token, result)   the adapter reports that a `Persist` action is durable
    drain() -> [actions]       what the adapter must do now, in order

and three kinds of action (etcd raft's `Ready` contract):

    Persist(token, record)     make `record` durable, then call `persisted(token, result)`
    Send(frame)                transmit `frame` now
    Event(event)               tell the gateway (link up/down, heartbeat measured)

The core never emits a `Send` that depends on a `Persist` not yet confirmed: a batch receipt
leaves only after `persisted()` said its batch is durable, a Welcome only after every batch
before it is durable, a Hello only after the settlements it claims are durable. So "persist,
then send" is a property of the core, tested without sockets; the gRPC adapters in
`server.peerlink` only do the I/O. Pings and pongs depend on nothing and leave at once, so
heartbeats never wait behind journal writes.

A protocol violation by the peer raises `RemoteProtocolError` and changes no state; the adapter
ends the stream (the receiver with the status code the error names). The normative text is in
`proto/hotline/v1/peer_link.proto`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from hotline import PROTOCOL_VERSION
from hotline.errors import LocalProtocolError, RemoteProtocolError

DEFAULT_WINDOW = 256  # unsettled deliveries in flight, all lanes together
MAX_BATCH = 256  # the spec's bound on deliveries per DeliveryBatch
DEFAULT_BATCH_COUNT = 32  # this implementation's batches: at most this many deliveries ...
DEFAULT_BATCH_BYTES = 1 << 20  # ... and this many payload bytes
# In-flight allowance per precedence rank (1 FLASH, 2 IMMEDIATE, 3 PRIORITY, 4 ROUTINE). The
# receiver works in sequence order, so lower-precedence deliveries in flight are work a new
# FLASH waits behind: their allowance bounds it.
DEFAULT_LANES: dict[int, int] = {1: 256, 2: 128, 3: 32, 4: 32}
DEFAULT_HEARTBEAT_INTERVAL = 2.0
DEFAULT_DEAD_AFTER = 6.0
MAX_RESUME = 65536  # settlements a Welcome may carry
NONCE_BYTES = 16


class RejectReason(Enum):
    """Why a receiver refused a delivery (mirrors `hotline.v1.RejectionReason`)."""

    INVALID_MESSAGE = "INVALID_MESSAGE"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    WRONG_PARTY = "WRONG_PARTY"
    DUPLICATE_MESSAGE_ID = "DUPLICATE_MESSAGE_ID"
    OUT_OF_ORDER = "OUT_OF_ORDER"  # never a settlement in protocol version 2
    NOT_RELEASABLE = "NOT_RELEASABLE"


class StreamEnd(Enum):
    """Why a receiver ends a stream; the adapter maps each to the spec's gRPC status code."""

    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DATA_LOSS = "DATA_LOSS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"


class PeerViolation(RemoteProtocolError):
    """The peer broke the protocol; `end` says how the receiver ends the stream."""

    def __init__(self, message: str, end: StreamEnd = StreamEnd.FAILED_PRECONDITION) -> None:
        super().__init__(message)
        self.end = end


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Hello:
    party: str
    last_receipted_sequence: int
    nonce: bytes
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ReceiptItem:
    """One delivery a batch receipt receipts."""

    sequence: int
    message_id: str
    digest: bytes
    journal_position: int = 0


@dataclass(frozen=True)
class RejectionItem:
    """One delivery a batch receipt refuses (final; see the spec for the duplicate case)."""

    sequence: int
    message_id: str
    reason: RejectReason
    detail: str = ""
    violations: tuple[tuple[str, str], ...] = ()
    digest: bytes = b""
    original_receipt: BatchReceipt | None = None


@dataclass(frozen=True)
class BatchReceipt:
    """A receiver's signed settlement of sequences first..last; `signed` is the wire form."""

    first_sequence: int
    last_sequence: int
    receipts: tuple[ReceiptItem, ...] = ()
    rejections: tuple[RejectionItem, ...] = ()
    signed: object = field(default=None, compare=False, repr=False)
    journal_time_ns: int = 0  # when the receiver made the batch durable, its clock

    def receipt_for(self, message_id: str) -> ReceiptItem | None:
        return next((r for r in self.receipts if r.message_id == message_id), None)

    def check_complete(self) -> None:
        """Every sequence first..last settled exactly once (raises RemoteProtocolError)."""
        if self.last_sequence < self.first_sequence:
            raise RemoteProtocolError(
                f"batch receipt covers {self.first_sequence}..{self.last_sequence}"
            )
        sequences = sorted(
            [r.sequence for r in self.receipts] + [r.sequence for r in self.rejections]
        )
        if sequences != list(range(self.first_sequence, self.last_sequence + 1)):
            raise RemoteProtocolError(
                f"batch receipt for {self.first_sequence}..{self.last_sequence} does not settle "
                "each of those sequences exactly once"
            )


@dataclass(frozen=True)
class Welcome:
    """A verified Welcome: the signed body's content and the batch receipts it carried."""

    receiver_party: str
    sender_party: str
    last_sequence: int
    hello_nonce: bytes
    batch_receipts: tuple[BatchReceipt, ...] = ()
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Delivery:
    """One delivery: `payload` is the signed envelope (opaque to the core), `size` its bytes."""

    sequence: int
    message_id: str
    digest: bytes
    payload: object = field(default=None, compare=False, repr=False)
    size: int = 0


@dataclass(frozen=True)
class DeliveryBatch:
    deliveries: tuple[Delivery, ...]

    @property
    def first_sequence(self) -> int:
        return self.deliveries[0].sequence

    @property
    def last_sequence(self) -> int:
        return self.deliveries[-1].sequence


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


SenderFrame = Hello | DeliveryBatch | Ping | Pong
ReceiverFrame = Welcome | BatchReceipt | Ping | Pong

# --------------------------------------------------------------------------- events


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


LinkEvent = LinkUp | LinkDown | Measured

# --------------------------------------------------------------------------- persist records


@dataclass(frozen=True)
class SettleOutbound:
    """Sender: journal a verified batch receipt and what it settles of our outbox.

    `receipted`: our messages it receipts; `refused`: our messages it refuses for good;
    `delivered_before`: duplicates whose original batch receipt covers the same bytes
    (journal that original receipt as their proof of delivery).
    """

    receipt: BatchReceipt
    receipted: tuple[ReceiptItem, ...] = ()
    refused: tuple[RejectionItem, ...] = ()
    delivered_before: tuple[tuple[RejectionItem, ReceiptItem], ...] = ()


@dataclass(frozen=True)
class Accepted:
    """Receiver: a delivery that passed every check; `envelope` is its parsed envelope."""

    delivery: Delivery
    message_id: str
    envelope: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class JournalBatch:
    """Receiver: journal these deliveries and rejections in one commit; sign a batch receipt.

    The adapter's `persisted(token, result)` must pass the signed `BatchReceipt`.
    """

    sender_party: str
    first_sequence: int
    last_sequence: int
    accepted: tuple[Accepted, ...]
    refused: tuple[RejectionItem, ...]


PersistRecord = SettleOutbound | JournalBatch

# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Persist:
    token: int
    record: PersistRecord


@dataclass(frozen=True)
class Send:
    """Transmit `frame`. On the receiving end `stream` names the stream it belongs to."""

    frame: SenderFrame | ReceiverFrame
    stream: int = 0


@dataclass(frozen=True)
class Event:
    event: LinkEvent


Action = Persist | Send | Event


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


class _Actions:
    """The drain both ends share, and the persist tokens."""

    def __init__(self) -> None:
        self._actions: list[Action] = []
        self._tokens = itertools.count(1)

    def drain(self) -> list[Action]:
        """Everything to do now, in order; the list is handed over and emptied."""
        out, self._actions = self._actions, []
        return out

    def _persist(self, record: PersistRecord) -> int:
        token = next(self._tokens)
        self._actions.append(Persist(token, record))
        return token

    def _send(self, frame: SenderFrame | ReceiverFrame, stream: int = 0) -> None:
        self._actions.append(Send(frame, stream))

    def _event(self, event: LinkEvent) -> None:
        self._actions.append(Event(event))


# --------------------------------------------------------------------------- sender


@dataclass(frozen=True)
class Outgoing:
    """A journaled outbound message waiting for its settlement.

    `rank` orders precedence (lower first: FLASH=1 ... ROUTINE=4); `order` is the journal
    position, which orders messages of the same precedence; `size` is the payload's bytes.
    """

    message_id: str
    rank: int
    order: int
    digest: bytes
    payload: object = field(default=None, compare=False, repr=False)
    size: int = 0


class SenderState(Enum):
    IDLE = "idle"  # no connection
    HELLO_SENT = "hello-sent"  # waiting for the Welcome
    OPEN = "open"


@dataclass
class _InFlight:
    batch: DeliveryBatch
    sent_at: float
    ranks: dict[str, int]  # message id -> rank, to give the lane its allowance back


class OutboundLink(_Actions):
    """The sending end of one direction: an outbox pushed to the peer in batches, by lane."""

    def __init__(
        self,
        party: str,
        peer_party: str,
        *,
        last_receipted_sequence: int = 0,
        window: int = DEFAULT_WINDOW,
        lanes: dict[int, int] | None = None,
        batch_count: int = DEFAULT_BATCH_COUNT,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = DEFAULT_DEAD_AFTER,
    ) -> None:
        super().__init__()
        if window < 1:
            raise ValueError("window must be at least 1")
        if not 1 <= batch_count <= MAX_BATCH:
            raise ValueError(f"batch_count must be in 1..{MAX_BATCH}")
        self.party = party
        self.peer_party = peer_party
        self.window = window
        self.lanes = {rank: max(1, min(window, n)) for rank, n in (lanes or DEFAULT_LANES).items()}
        self.batch_count = batch_count
        self.batch_bytes = batch_bytes
        self.state = SenderState.IDLE
        self.last_settled = last_receipted_sequence
        self._settled_above: set[int] = set()  # settled sequences beyond last_settled
        self._next_sequence = 0
        self._pending: dict[int, list[tuple[int, str]]] = {}  # rank -> heap of (order, id)
        self._messages: dict[str, Outgoing] = {}  # every unsettled message
        self._in_flight: dict[int, _InFlight] = {}  # first sequence -> batch, this connection
        self._lane_use: dict[int, int] = {}  # rank -> deliveries in flight
        self._transmitted: set[str] = set()  # message ids in flight on this connection
        self._unconfirmed: set[int] = set()  # persist tokens not yet durable
        self._hello: Hello | None = None  # the Hello to send once persists are confirmed
        self._nonce = b""
        self._heartbeat = Heartbeat(heartbeat_interval, dead_after)

    # -- the outbox

    def enqueue(self, message: Outgoing) -> None:
        """Add a journaled message to the outbox (ignored if already there)."""
        if message.message_id in self._messages:
            return
        self._messages[message.message_id] = message
        heapq.heappush(
            self._pending.setdefault(message.rank, []), (message.order, message.message_id)
        )

    @property
    def queue_depth(self) -> int:
        """Messages journaled here but not yet settled by the peer."""
        return len(self._messages)

    @property
    def in_flight(self) -> int:
        return sum(self._lane_use.values())

    @property
    def up(self) -> bool:
        return self.state is SenderState.OPEN

    # -- connection lifecycle

    def connect(self, now: float, nonce: bytes) -> None:
        """Start a new connection: everything unsettled will be resent after the Welcome.

        The Hello is sent once every settlement journaled before it is durable, so that its
        `last_receipted_sequence` is never ahead of our journal.
        """
        if len(nonce) < NONCE_BYTES:
            raise LocalProtocolError(f"a Hello nonce needs at least {NONCE_BYTES} bytes")
        self._requeue_in_flight()
        self.state = SenderState.HELLO_SENT
        self._nonce = nonce
        self._heartbeat.heard(now)
        self._heartbeat.last_ping = now
        self._hello = Hello(self.party, self.last_settled, nonce)
        self._release_hello()

    def disconnect(self, reason: str) -> None:
        was_up = self.state is SenderState.OPEN
        self._requeue_in_flight()
        self.state = SenderState.IDLE
        self._hello = None
        if was_up:
            self._event(LinkDown(reason))

    def _release_hello(self) -> None:
        if self._hello is not None and not self._unconfirmed:
            self._send(self._hello)
            self._hello = None

    def _requeue_in_flight(self) -> None:
        for flight in self._in_flight.values():
            for d in flight.batch.deliveries:
                message = self._messages.get(d.message_id)
                if message is not None:
                    heapq.heappush(
                        self._pending.setdefault(message.rank, []), (message.order, d.message_id)
                    )
        self._in_flight.clear()
        self._lane_use.clear()
        self._transmitted.clear()

    # -- input

    def receive(self, frame: ReceiverFrame, now: float) -> None:
        """Process one (signature-checked) frame from the receiver."""
        if self.state is SenderState.IDLE:
            raise LocalProtocolError("frame received with no connection open")
        self._heartbeat.heard(now)
        if isinstance(frame, Welcome):
            self._on_welcome(frame)
        elif self.state is not SenderState.OPEN:
            raise RemoteProtocolError(f"expected Welcome first, got {type(frame).__name__}")
        elif isinstance(frame, BatchReceipt):
            self._on_batch_receipt(frame)
        elif isinstance(frame, Pong):
            self._event(Heartbeat.measure(frame, now))
        else:
            self._send(Heartbeat.answer(frame, now, now))

    def _on_welcome(self, welcome: Welcome) -> None:
        if self.state is not SenderState.HELLO_SENT or self._hello is not None:
            raise RemoteProtocolError("Welcome received twice, or before the Hello")
        if welcome.protocol_version != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"peer speaks protocol version {welcome.protocol_version}")
        if welcome.receiver_party != self.peer_party or welcome.sender_party != self.party:
            raise RemoteProtocolError(
                f"Welcome is for {welcome.sender_party}->{welcome.receiver_party}, "
                f"expected {self.party}->{self.peer_party}"
            )
        if welcome.hello_nonce != self._nonce:
            raise RemoteProtocolError("Welcome signs another nonce than our Hello's: a replay")
        if welcome.last_sequence < self.last_settled:
            raise RemoteProtocolError(
                f"peer holds up to sequence {welcome.last_sequence} but already settled "
                f"{self.last_settled}: the peer's journal lost entries"
            )
        # Check everything before changing anything: a bad Welcome changes no state.
        plans: list[SettleOutbound | None] = []
        claimed: set[str] = set()  # a message settled by an earlier receipt of this Welcome
        for receipt in welcome.batch_receipts:
            plan = self._plan_settlement(receipt, strict=False, claimed=claimed)
            plans.append(plan)
            if plan is not None:
                claimed.update(_settled_ids(plan))
        for plan in plans:
            if plan is not None:
                self._apply(plan)
        self.last_settled = welcome.last_sequence
        self._settled_above = {s for s in self._settled_above if s > welcome.last_sequence}
        self._next_sequence = welcome.last_sequence + 1
        self.state = SenderState.OPEN
        self._event(LinkUp(welcome.last_sequence))

    def _on_batch_receipt(self, receipt: BatchReceipt) -> None:
        flight = self._in_flight.get(receipt.first_sequence)
        if flight is None:
            if receipt.last_sequence <= self.last_settled:
                return  # a resend of a batch receipt we hold: harmless
            raise RemoteProtocolError(
                f"batch receipt for {receipt.first_sequence}..{receipt.last_sequence} "
                "matches no batch in flight"
            )
        if receipt.last_sequence != flight.batch.last_sequence:
            raise RemoteProtocolError(
                f"batch receipt covers {receipt.first_sequence}..{receipt.last_sequence}, "
                f"but {flight.batch.first_sequence}..{flight.batch.last_sequence} was sent"
            )
        plan = self._plan_settlement(receipt, strict=True, sent=flight.batch)
        del self._in_flight[receipt.first_sequence]
        for d in flight.batch.deliveries:
            rank = flight.ranks[d.message_id]
            self._lane_use[rank] -= 1
            self._transmitted.discard(d.message_id)
        if plan is not None:
            self._apply(plan)
        self._mark_settled(range(receipt.first_sequence, receipt.last_sequence + 1))

    def _plan_settlement(
        self,
        receipt: BatchReceipt,
        *,
        strict: bool,
        sent: DeliveryBatch | None = None,
        claimed: set[str] | None = None,
    ) -> SettleOutbound | None:
        """Check a batch receipt against what we sent (or hold); the record to journal."""
        receipt.check_complete()
        by_sequence = {d.sequence: d for d in sent.deliveries} if sent else {}
        receipted: list[ReceiptItem] = []
        refused: list[RejectionItem] = []
        before: list[tuple[RejectionItem, ReceiptItem]] = []
        items: list[ReceiptItem | RejectionItem] = [*receipt.receipts, *receipt.rejections]
        for item in items:
            if strict:
                d = by_sequence[item.sequence]
                if d.message_id != item.message_id and not (
                    isinstance(item, RejectionItem) and not item.message_id
                ):
                    raise RemoteProtocolError(
                        f"batch receipt settles sequence {item.sequence} as "
                        f"{item.message_id or 'an unreadable message'}, but {d.message_id} was sent"
                    )
                message_id = d.message_id
            else:
                message_id = item.message_id
            message = self._messages.get(message_id)
            if message is None or (claimed and message_id in claimed):
                continue  # settled before (e.g. learned again from a Welcome)
            if isinstance(item, ReceiptItem):
                if item.digest != message.digest:
                    raise RemoteProtocolError(
                        f"receipt for {message_id} covers different bytes than were sent"
                    )
                receipted.append(item)
                continue
            if item.digest and item.digest != message.digest:
                raise RemoteProtocolError(
                    f"rejection of {message_id} names different bytes than were sent"
                )
            if item.reason is RejectReason.OUT_OF_ORDER:
                raise RemoteProtocolError("OUT_OF_ORDER is not a settlement")
            if item.reason is RejectReason.DUPLICATE_MESSAGE_ID:
                original = item.original_receipt
                if original is None:
                    raise RemoteProtocolError("DUPLICATE_MESSAGE_ID without the original receipt")
                held = original.receipt_for(message_id)
                if held is not None and held.digest == message.digest:
                    before.append((item, held))
                    continue
            refused.append(
                item if item.message_id else _with_message_id(item, message_id, message.digest)
            )
        if not (receipted or refused or before):
            return None
        return SettleOutbound(receipt, tuple(receipted), tuple(refused), tuple(before))

    def _apply(self, plan: SettleOutbound) -> None:
        for message_id in _settled_ids(plan):
            self._messages.pop(message_id, None)
        self._unconfirmed.add(self._persist(plan))

    def _mark_settled(self, sequences: Iterable[int]) -> None:
        self._settled_above.update(sequences)
        while self.last_settled + 1 in self._settled_above:
            self.last_settled += 1
            self._settled_above.discard(self.last_settled)

    def persisted(self, token: int, result: object = None) -> None:
        """A `Persist` is durable (the sender's records need no result)."""
        self._unconfirmed.discard(token)
        self._release_hello()

    # -- time

    def tick(self, now: float) -> None:
        """Send what is due (batches within the lanes' allowances, a heartbeat); check deadlines.

        Two deadlines, both `dead_after`: nothing heard from the peer at all, and the oldest
        batch in flight still unsettled (a stream that stays open but stopped settling, e.g.
        a receiver whose disk hangs, is as dead as a silent one). When one passes, the link
        is declared down (an `Event(LinkDown)`): the adapter ends the stream.
        """
        if self.state is SenderState.IDLE:
            return
        limit = self._heartbeat.dead_after
        if self._heartbeat.dead(now):
            self.disconnect(f"no frame from the peer for {limit:g} s")
            return
        if self._in_flight:
            oldest = min(self._in_flight)
            if now - self._in_flight[oldest].sent_at > limit:
                self.disconnect(f"no batch receipt for sequence {oldest} within {limit:g} s")
                return
        if self.state is SenderState.OPEN:
            self._send_batches(now)
            ping = self._heartbeat.due(now)
            if ping is not None:
                self._send(ping)

    def _send_batches(self, now: float) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            deliveries = []
            ranks = {}
            for message in batch:
                sequence = self._next_sequence
                self._next_sequence += 1
                deliveries.append(
                    Delivery(
                        sequence, message.message_id, message.digest, message.payload, message.size
                    )
                )
                ranks[message.message_id] = message.rank
                self._transmitted.add(message.message_id)
            frame = DeliveryBatch(tuple(deliveries))
            self._in_flight[frame.first_sequence] = _InFlight(frame, now, ranks)
            self._send(frame)

    def _next_batch(self) -> list[Outgoing]:
        """The next batch: one precedence (so a FLASH never waits for a ROUTINE batch-mate),
        the highest with both pending messages and allowance left."""
        for rank in sorted(self._pending):
            heap = self._pending[rank]
            batch: list[Outgoing] = []
            size = 0
            while heap and self.in_flight + len(batch) < self.window:
                if self._lane_use.get(rank, 0) + len(batch) >= self.lanes.get(rank, self.window):
                    break
                if len(batch) >= self.batch_count:
                    break
                _, message_id = heap[0]
                message = self._messages.get(message_id)
                if message is None or message_id in self._transmitted:
                    heapq.heappop(heap)  # settled meanwhile, or a stale heap entry
                    continue
                if batch and size + message.size > self.batch_bytes:
                    break
                heapq.heappop(heap)
                batch.append(message)
                size += message.size
            if batch:
                self._lane_use[rank] = self._lane_use.get(rank, 0) + len(batch)
                return batch
        return []


def _settled_ids(plan: SettleOutbound) -> list[str]:
    ids = [r.message_id for r in plan.receipted]
    ids += [r.message_id for r in plan.refused]
    ids += [r.message_id for r, _ in plan.delivered_before]
    return ids


def _with_message_id(item: RejectionItem, message_id: str, digest: bytes) -> RejectionItem:
    """A rejection of an unreadable payload names no id: the sender knows which it sent."""
    return RejectionItem(
        item.sequence,
        message_id,
        item.reason,
        item.detail,
        item.violations,
        item.digest or digest,
        item.original_receipt,
    )


# --------------------------------------------------------------------------- receiver


class ReceiptArchive(Protocol):
    """The receiver's stored batch receipts (the journal satisfies it); read rarely: at a
    Hello, for a resend, for a duplicate."""

    def batch_receipts_after(self, sender_party: str, sequence: int) -> list[BatchReceipt]: ...

    def batch_receipt_for(self, sender_party: str, sequence: int) -> BatchReceipt | None: ...


@dataclass(frozen=True)
class Seen:
    """What the receiver knows of a message id: received under `sequence`, or ours (0)."""

    sequence: int
    digest: bytes = b""


Verdict = Accepted | RejectionItem
Checker = Callable[[Delivery, Callable[[str], Seen | None]], Verdict]
"""The acceptance checks (`hotline.acceptance.check_delivery`, bound to keys and parties): takes
a delivery (message id still unknown: the payload is unverified) and a lookup of ids seen
before, and returns the verdict."""


class InboundLink(_Actions):
    """The receiving end of one direction, across all the streams the peer opens.

    State that outlives a stream: the last sequence settled (durable or not), the ids seen,
    and the persists not yet durable. A new stream's Welcome waits until every batch of the
    streams before it is durable, so that its `last_sequence` is exact.
    """

    def __init__(
        self,
        party: str,
        peer_party: str,
        *,
        last_sequence: int,
        seen: dict[str, Seen],
        archive: ReceiptArchive,
        check: Checker,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = DEFAULT_DEAD_AFTER,
    ) -> None:
        super().__init__()
        self.party = party
        self.peer_party = peer_party
        self.last_sequence = last_sequence  # accepted, durable or on its way
        self.durable_sequence = last_sequence
        self._seen = seen
        self._archive = archive
        self._check = check
        self._stream = 0  # the current stream; 0 = none
        self._welcomed = False
        self._welcome_due: Hello | None = None
        self._pending: dict[int, tuple[int, JournalBatch]] = {}  # token -> (stream, batch)
        self._heartbeat = Heartbeat(heartbeat_interval, dead_after)
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after

    @property
    def stream(self) -> int:
        return self._stream

    # -- streams

    def hello(self, hello: Hello, now: float) -> int:
        """A new stream opens with `hello`: returns its stream id. The Welcome follows once
        every batch persisted before it is durable (raises PeerViolation for a bad Hello)."""
        if hello.protocol_version != PROTOCOL_VERSION:
            raise PeerViolation(
                f"protocol version {hello.protocol_version} is not supported "
                f"(this gateway speaks {PROTOCOL_VERSION})"
            )
        if hello.party != self.peer_party:
            raise PeerViolation(
                f"Hello claims party {hello.party}, but the peer is party {self.peer_party}",
                StreamEnd.PERMISSION_DENIED,
            )
        if not NONCE_BYTES <= len(hello.nonce) <= 64:
            raise PeerViolation(
                f"Hello nonce has {len(hello.nonce)} bytes, must be 16..64",
                StreamEnd.INVALID_ARGUMENT,
            )
        self._stream += 1
        self._welcomed = False
        self._heartbeat = Heartbeat(self._heartbeat_interval, self._dead_after)
        self._heartbeat.heard(now)
        self._heartbeat.last_ping = now
        self._welcome_due = hello
        self._release_welcome()
        return self._stream

    def _release_welcome(self) -> None:
        hello = self._welcome_due
        if hello is None or self._pending:
            return
        self._welcome_due = None
        last = self.durable_sequence
        if hello.last_receipted_sequence > last:
            raise PeerViolation(
                f"sender claims settlements up to {hello.last_receipted_sequence}, "
                f"but this journal holds only up to {last}",
                StreamEnd.DATA_LOSS,
            )
        if last - hello.last_receipted_sequence > MAX_RESUME:
            raise PeerViolation(
                f"sender holds settlements only up to {hello.last_receipted_sequence} of {last}: "
                "more than a resume can carry; its journal was lost"
            )
        receipts = tuple(
            self._archive.batch_receipts_after(self.peer_party, hello.last_receipted_sequence)
        )
        self._welcomed = True
        self._send(Welcome(self.party, self.peer_party, last, hello.nonce, receipts), self._stream)
        self._event(LinkUp(last))

    def close(self, stream: int) -> None:
        """A stream ended: its pending batches still become durable, but send nothing more."""
        if stream == self._stream:
            self._welcomed = False
            self._welcome_due = None

    # -- input

    def receive(self, frame: DeliveryBatch | Ping | Pong, now: float, stream: int) -> None:
        if stream != self._stream or not stream:
            raise PeerViolation("a newer stream from the peer replaced this one", StreamEnd.ABORTED)
        self._heartbeat.heard(now)
        if isinstance(frame, Ping):
            self._send(Heartbeat.answer(frame, now, now), stream)
            return
        if isinstance(frame, Pong):
            self._event(Heartbeat.measure(frame, now))
            return
        if not self._welcomed:
            raise PeerViolation("a delivery batch before the Welcome")
        self._on_batch(frame)

    def _on_batch(self, batch: DeliveryBatch) -> None:
        deliveries = batch.deliveries
        if not 1 <= len(deliveries) <= MAX_BATCH:
            raise PeerViolation(
                f"a delivery batch holds {len(deliveries)} deliveries, must be 1..{MAX_BATCH}",
                StreamEnd.INVALID_ARGUMENT,
            )
        for a, b in itertools.pairwise(deliveries):
            if b.sequence != a.sequence + 1:
                raise PeerViolation(
                    f"a delivery batch is not consecutive ({a.sequence} then {b.sequence})",
                    StreamEnd.INVALID_ARGUMENT,
                )
        first = batch.first_sequence
        expected = self.last_sequence + 1
        if first > expected:
            raise PeerViolation(f"OUT_OF_ORDER: expected sequence {expected}, got {first}")
        if first < expected:
            self._resend(batch)
            return
        accepted: list[Accepted] = []
        refused: list[RejectionItem] = []
        fresh: dict[str, Seen] = {}

        def seen(message_id: str) -> Seen | None:
            return fresh.get(message_id) or self._seen.get(message_id)

        for d in deliveries:
            verdict = self._check(d, seen)
            if isinstance(verdict, Accepted):
                accepted.append(verdict)
                fresh[verdict.message_id] = Seen(d.sequence, d.digest)
                continue
            if verdict.reason is RejectReason.DUPLICATE_MESSAGE_ID:
                verdict = self._with_original(verdict, seen(verdict.message_id))
            refused.append(verdict)
        self._seen.update(fresh)
        self.last_sequence = batch.last_sequence
        record = JournalBatch(
            self.peer_party, first, batch.last_sequence, tuple(accepted), tuple(refused)
        )
        token = self._persist(record)
        self._pending[token] = (self._stream, record)

    def _with_original(self, item: RejectionItem, held: Seen | None) -> RejectionItem:
        original = None
        if held is not None and held.sequence:
            original = self._archive.batch_receipt_for(self.peer_party, held.sequence)
        if original is None:
            # Received on this stream, its batch not yet durable: the receipt does not exist
            # yet. Refuse it as a duplicate all the same; the sender resolves it on reconnect.
            raise PeerViolation(
                f"message {item.message_id} sent twice before its first batch was settled"
            )
        return RejectionItem(
            item.sequence,
            item.message_id,
            item.reason,
            item.detail,
            item.violations,
            item.digest,
            original,
        )

    def _resend(self, batch: DeliveryBatch) -> None:
        if batch.last_sequence > self.durable_sequence:
            raise PeerViolation(
                f"OUT_OF_ORDER: sequences {batch.first_sequence}..{batch.last_sequence} "
                f"resent before they were settled (expected {self.last_sequence + 1})"
            )
        receipts: dict[int, BatchReceipt] = {}
        for d in batch.deliveries:
            held = self._archive.batch_receipt_for(self.peer_party, d.sequence)
            if held is None:
                raise LocalProtocolError(f"no batch receipt held for sequence {d.sequence}")
            items: list[ReceiptItem | RejectionItem] = [*held.receipts, *held.rejections]
            digest = next((i.digest for i in items if i.sequence == d.sequence), b"")
            if digest != d.digest:
                raise PeerViolation(
                    f"OUT_OF_ORDER: sequence {d.sequence} resent with other bytes than were "
                    f"settled (expected {self.last_sequence + 1})"
                )
            receipts[held.first_sequence] = held
        for _, held in sorted(receipts.items()):
            self._send(held, self._stream)

    def persisted(self, token: int, result: object) -> None:
        """A `JournalBatch` is durable; `result` is its signed `BatchReceipt`."""
        stream, record = self._pending.pop(token)
        if not isinstance(result, BatchReceipt):
            raise LocalProtocolError("a journaled batch must report its batch receipt")
        self.durable_sequence = max(self.durable_sequence, record.last_sequence)
        if stream == self._stream and self._welcomed:
            self._send(result, stream)
        self._release_welcome()

    def failed(self, token: int) -> None:
        """A `JournalBatch` could not be made durable: forget it and everything after it.

        Nothing of it was sent; the sender will resend it after the stream ends (the adapter
        ends it) and the next Welcome tells it where the journal stands.
        """
        _, record = self._pending.pop(token)
        for accepted in record.accepted:
            self._seen.pop(accepted.message_id, None)
        self.last_sequence = min(self.last_sequence, record.first_sequence - 1)
        self._release_welcome()

    # -- time

    def tick(self, now: float) -> None:
        """A heartbeat when due. A peer silent for `dead_after` is declared down: an
        `Event(LinkDown)`, and the adapter ends the stream."""
        if not self._welcomed:
            return
        if self._heartbeat.dead(now):
            self._welcomed = False
            self._event(LinkDown(f"no frame from the peer for {self._heartbeat.dead_after:g} s"))
            return
        ping = self._heartbeat.due(now)
        if ping is not None:
            self._send(ping, self._stream)


def settled_sequences(receipts: Sequence[BatchReceipt]) -> int:
    """How many sequences these batch receipts settle (for logs and tests)."""
    return sum(r.last_sequence - r.first_sequence + 1 for r in receipts)
