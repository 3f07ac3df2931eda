"""The link's vocabulary: frames, events, persist records, actions, and the heartbeat.

Plain frozen values; `hotline.wire` converts frames to and from `hotline.v1`. See the package
docstring for how the two ends use them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

from hotline import PROTOCOL_VERSION
from hotline.errors import RemoteProtocolError
from hotline.lifecycle import Standing

DEFAULT_WINDOW = 256  # unsettled deliveries in flight, all lanes together
MAX_BATCH = 256  # the spec's bound on deliveries per DeliveryBatch
DEFAULT_BATCH_COUNT = 32  # this implementation's batches: at most this many deliveries ...
MAX_FRAME_BYTES = 1 << 20  # the spec's bound on a frame to the receiver, serialized
MAX_ENVELOPE_BYTES = 1_000_000  # the spec's bound on a signed envelope's payload: fits a frame
DELIVERY_OVERHEAD = 256  # bytes a delivery adds to its payload in a frame, at most
DEFAULT_BATCH_BYTES = MAX_FRAME_BYTES - 1024  # ... and this many bytes (payload + overhead)
# In-flight allowance per precedence rank (1 FLASH, 2 IMMEDIATE, 3 PRIORITY, 4 ROUTINE). The
# receiver works in sequence order, so lower-precedence deliveries in flight are work a new
# FLASH waits behind: their allowance bounds it. It also bounds the link's rate, to about
# allowance / round trip. Measured on a 2-core machine (FLASH sent from its own console while
# 2,000 ROUTINE drain; 8 rounds a run): FLASH / idle p50 with 32 in flight 2.2-3.6x, 16 ~2.4x,
# 8 ~2.1x; the drain rate of the link alone fell from ~2,500/s (32) to ~1,850/s (8), and while
# operators also submit SendBatches at full speed, from ~1,380 to ~390 delivered/s (8: the
# round trip grows with the gateway's load, the allowance does not). So 32 by default, and a
# gateway setting (`low_precedence_in_flight`) for a hot line that would rather trade ROUTINE
# throughput for FLASH latency.
DEFAULT_LOW_LANE = 32
DEFAULT_LANES: dict[int, int] = {1: 256, 2: 128, 3: DEFAULT_LOW_LANE, 4: DEFAULT_LOW_LANE}
# The lanes of a direction: one per precedence rank, each with its own stream, sequences and
# settlements (peer_link.proto, "Precedence lanes"). Checkpoints travel on the ROUTINE lane.
LANES = (1, 2, 3, 4)
ROUTINE_LANE = 4
URGENT_LANES = frozenset({1, 2})  # FLASH and IMMEDIATE: their journal commits go first
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
    lane: int = ROUTINE_LANE


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
    lane: int = ROUTINE_LANE

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
    # The latest checkpoint of the sender's journal the receiver witnessed. Receiver side: the
    # signed payload to carry (opaque); sender side, once verified: a `WitnessedCheckpoint`.
    witnessed: object = field(default=None, compare=False)
    lane: int = ROUTINE_LANE


@dataclass(frozen=True)
class WitnessedCheckpoint:
    """A checkpoint of our own journal the peer witnessed (its signature verified: ours)."""

    entry_count: int
    head_hash: bytes


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
    lane: int = ROUTINE_LANE


@dataclass(frozen=True)
class LinkDown:
    reason: str


@dataclass(frozen=True)
class Measured:
    """A heartbeat round trip: RTT and the peer's clock offset (peer minus us), seconds."""

    rtt: float
    clock_offset: float


@dataclass(frozen=True)
class JournalLost:
    """Sender: the peer holds more of our messages than our journal does.

    The Welcome's batch receipts settle sequences above our last settled one with messages
    our journal has no record of (e.g. our journal was replaced by an empty one). `missing`
    are (sequence, message id) pairs, in sequence order. The sending end is held from then on:
    nothing more is sent on this direction until the journal is recovered.
    """

    last_settled: int  # ours
    peer_last_sequence: int  # the Welcome's
    missing: tuple[tuple[int, str], ...]
    # Or found by the witnessed checkpoint: (its entry count, our journal's entry count), and
    # whether our chain differs at that count (False: our journal is shorter than it)
    checkpoint: tuple[int, int] | None = None
    forked: bool = False

    @property
    def detail(self) -> str:
        found = []
        if self.missing:
            first, last = self.missing[0][0], self.missing[-1][0]
            found.append(
                f"the peer holds {len(self.missing)} of our messages (sequences {first}..{last}, "
                f"e.g. {self.missing[0][1]}) that this journal has no record of: it holds "
                f"settlements up to sequence {self.last_settled}, the peer up to "
                f"{self.peer_last_sequence}"
            )
        if self.checkpoint is not None:
            witnessed, ours = self.checkpoint
            if self.forked:
                found.append(
                    f"the peer witnessed our journal at {witnessed} entries with another head "
                    "hash than this journal has there: it was rewritten or replaced"
                )
            else:
                found.append(
                    f"the peer witnessed our journal at {witnessed} entries, but this journal "
                    f"holds only {ours}"
                )
        return "; ".join(found) + "; this journal lost history"


LinkEvent = LinkUp | LinkDown | Measured | JournalLost

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
class Seen:
    """What the receiver knows of a message id: received under `sequence`, or ours (0), and
    where the message stands in its chain (`hotline.lifecycle`), when the checker tracks it."""

    sequence: int
    digest: bytes = b""
    standing: Standing | None = None
    lane: int = ROUTINE_LANE  # the lane `sequence` belongs to


@dataclass(frozen=True)
class Accepted:
    """Receiver: a delivery that passed every check; `envelope` is its parsed envelope.

    `index` holds what accepting it changes in the receiver's index of message ids, applied in
    order after the core's own `Seen(sequence, digest)` for it: the message's own entry with
    its standing, and the standing of a message it updates or cancels.
    """

    delivery: Delivery
    message_id: str
    envelope: object = field(default=None, compare=False, repr=False)
    index: tuple[tuple[str, Seen], ...] = ()


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
    lane: int = ROUTINE_LANE


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
    last_looked: float | None = None  # the last tick: when this end last looked at the time
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def heard(self, now: float) -> None:
        self.last_heard = now
        self.last_looked = now if self.last_looked is None else max(self.last_looked, now)

    def looked(self, now: float) -> float:
        """A tick at `now`: returns how long this end was not looking (a stalled event loop).

        The adapter ticks at least every half interval; a longer gap means this end could not
        read frames either, so the silence of that gap beyond one interval is not the peer's:
        it is forgiven (`last_heard` moves on by it). A saturated gateway then keeps its link,
        and a dead peer is still found, one `dead_after` of our attention later.
        """
        if self.last_looked is None:
            self.last_looked = now
            return 0.0
        stall = max(0.0, now - self.last_looked - self.interval)
        self.last_looked = max(self.last_looked, now)
        self.last_heard += stall
        return stall

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
