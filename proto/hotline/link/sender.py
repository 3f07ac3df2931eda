"""The sending end of one direction of the link: an outbox pushed in batches, by lane."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType

from hotline import PROTOCOL_VERSION
from hotline.errors import LocalProtocolError, RemoteProtocolError
from hotline.link.values import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_COUNT,
    DEFAULT_DEAD_AFTER,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LANES,
    DEFAULT_WINDOW,
    DELIVERY_OVERHEAD,
    LANES,
    MAX_BATCH,
    NONCE_BYTES,
    ROUTINE_LANE,
    BatchReceipt,
    Delivery,
    DeliveryBatch,
    Heartbeat,
    Hello,
    JournalLost,
    LinkDown,
    LinkUp,
    Pong,
    ReceiptItem,
    ReceiverFrame,
    RejectionItem,
    RejectReason,
    SettleOutbound,
    Welcome,
    WitnessedCheckpoint,
    _Actions,
)

# --------------------------------------------------------------------------- sender

HURRIED = -(1 << 62)  # a heap key below every journal position: sent next (`hurry`)


@dataclass(frozen=True)
class Outgoing:
    """A journaled outbound message waiting for its settlement.

    `rank` orders precedence (lower first: FLASH=1 ... ROUTINE=4); `order` is the journal
    position, which orders messages of the same precedence; `size` is the payload's bytes.
    `after` is the message an UPDATE or CANCEL refers to: it is never transmitted before that
    one (the receiver checks an UPDATE against the message it updates, in sequence order), so
    a FLASH update of a ROUTINE message still in the outbox takes that message along in its
    lane rather than overtake it.
    """

    message_id: str
    rank: int
    order: int
    digest: bytes
    payload: object = field(default=None, compare=False, repr=False)
    size: int = 0
    after: str = ""


class SenderState(Enum):
    IDLE = "idle"  # no connection
    HELLO_SENT = "hello-sent"  # waiting for the Welcome
    OPEN = "open"
    HELD = "held"  # our journal lost history the peer holds: nothing is sent, ever (final)


@dataclass
class _InFlight:
    batch: DeliveryBatch
    sent_at: float
    ranks: dict[str, int]  # message id -> rank, to give the lane its allowance back


class OutboundLink(_Actions):
    """The sending end of one lane of one direction: that lane's outbox pushed to the peer in
    batches, under the lane's own sequences (`lane`: its precedence rank, 1 FLASH .. 4
    ROUTINE). An UPDATE or CANCEL of a message unsettled on another lane waits at the head of
    its precedence until that one is settled (`unsettled_elsewhere`, `hurry`: LINK-13)."""

    def __init__(
        self,
        party: str,
        peer_party: str,
        *,
        lane: int = ROUTINE_LANE,
        last_receipted_sequence: int = 0,
        window: int = DEFAULT_WINDOW,
        lanes: dict[int, int] | None = None,
        batch_count: int = DEFAULT_BATCH_COUNT,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = DEFAULT_DEAD_AFTER,
        journal_hash_at: Callable[[int], bytes | None] | None = None,
        unsettled_elsewhere: Callable[[str], bool] | None = None,
    ) -> None:
        """`journal_hash_at(n)`: our journal's chain hash after its first n entries, None if it
        holds fewer (to check a Welcome's witnessed checkpoint; without it none is checked).
        `unsettled_elsewhere(id)`: whether a message is unsettled on another lane; an UPDATE or
        CANCEL of one waits at the head of its precedence until it is settled (LINK-13)."""
        super().__init__()
        if window < 1:
            raise ValueError("window must be at least 1")
        if not 1 <= batch_count <= MAX_BATCH:
            raise ValueError(f"batch_count must be in 1..{MAX_BATCH}")
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}")
        self.party = party
        self.peer_party = peer_party
        self.lane = lane
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
        self.lost: JournalLost | None = None  # set when a Welcome showed our journal lost history
        self._journal_hash_at = journal_hash_at
        self._elsewhere = unsettled_elsewhere or (lambda message_id: False)
        self._hello: Hello | None = None  # the Hello to send once persists are confirmed
        self._nonce = b""
        self._heartbeat = Heartbeat(heartbeat_interval, dead_after)
        # Set by the adapter while a higher lane is not yet open: no batch leaves this one
        # (heartbeats and deadlines go on), so that when a link comes up the FLASH backlog
        # leaves before the ROUTINE one.
        self.paused = False

    # -- the outbox

    def enqueue(self, message: Outgoing) -> None:
        """Add a journaled message to the outbox (ignored if already there)."""
        if message.message_id in self._messages:
            return
        self._messages[message.message_id] = message
        heapq.heappush(
            self._pending.setdefault(message.rank, []), (message.order, message.message_id)
        )

    def hurry(self, message_id: str) -> None:
        """Send `message_id` next in its precedence, ahead of journal order: an UPDATE or
        CANCEL on another lane waits for its settlement (LINK-13)."""
        message = self._messages.get(message_id)
        if message is not None and message_id not in self._transmitted:
            heapq.heappush(
                self._pending.setdefault(message.rank, []), (HURRIED + message.order, message_id)
            )

    def message(self, message_id: str) -> Outgoing | None:
        """The unsettled message `message_id` of this lane, if any."""
        return self._messages.get(message_id)

    def references_elsewhere(self) -> list[tuple[str, int]]:
        """(id, this lane) for each message an unsettled message here refers to that this lane
        does not hold: what the adapter hurries on the other lanes (after a reconnect)."""
        return [
            (m.after, self.lane)
            for m in self._messages.values()
            if m.after and m.after not in self._messages
        ]

    def holds(self, message_id: str) -> bool:
        """Whether `message_id` is in this lane's outbox, unsettled."""
        return message_id in self._messages

    @property
    def queue_depth(self) -> int:
        """Messages journaled here but not yet settled by the peer."""
        return len(self._messages)

    @property
    def in_flight(self) -> int:
        return sum(self._lane_use.values())

    @property
    def settling(self) -> bool:
        """Whether settlements of this lane are still being made durable."""
        return bool(self._unconfirmed)

    @property
    def lanes_in_flight(self) -> Mapping[int, int]:
        """Deliveries in flight per lane (precedence rank), read-only (for metrics)."""
        return MappingProxyType(self._lane_use)

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
        if self.state is SenderState.HELD:
            raise LocalProtocolError("sending is held: this journal lost history the peer holds")
        self._requeue_in_flight()
        self.state = SenderState.HELLO_SENT
        self._nonce = nonce
        self._heartbeat.heard(now)
        self._heartbeat.last_ping = now
        self._hello = Hello(self.party, self.last_settled, nonce, lane=self.lane)
        self._release_hello()

    def disconnect(self, reason: str) -> None:
        was_up = self.state is SenderState.OPEN
        self._requeue_in_flight()
        if self.state is SenderState.HELD:
            return
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
        if self.state is SenderState.HELD:
            return  # the adapter is ending the stream; nothing the peer says changes that
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
        if welcome.lane != self.lane:
            raise RemoteProtocolError(f"Welcome is for lane {welcome.lane}, not lane {self.lane}")
        for receipt in welcome.batch_receipts:
            self._check_lane(receipt)
        if welcome.last_sequence < self.last_settled:
            raise RemoteProtocolError(
                f"peer holds up to sequence {welcome.last_sequence} but already settled "
                f"{self.last_settled}: the peer's journal lost entries"
            )
        # Check everything before changing anything: a bad Welcome changes no state.
        missing = self._unknown_to_us(welcome)
        witnessed = self._witnessed_problem(welcome)
        if witnessed is not None and not missing:
            self.state = SenderState.HELD
            self._requeue_in_flight()
            self.lost = witnessed
            self._event(self.lost)
            return
        if missing:
            # The peer holds messages of ours that our journal does not: our journal lost
            # history (deleted, replaced, restored from an old copy). Adopting the peer's
            # sequence would paper over it; sending more would build on a record we no
            # longer have. Hold the sending end for good (only a recovered journal and a
            # restart release it) and tell the gateway.
            self.state = SenderState.HELD
            self._requeue_in_flight()
            self.lost = JournalLost(
                self.last_settled,
                welcome.last_sequence,
                missing,
                checkpoint=witnessed.checkpoint if witnessed else None,
                forked=witnessed.forked if witnessed else False,
            )
            self._event(self.lost)
            return
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
        self._event(LinkUp(welcome.last_sequence, self.lane))

    def _witnessed_problem(self, welcome: Welcome) -> JournalLost | None:
        """A `JournalLost` if the Welcome's witnessed checkpoint of our journal is beyond or
        off our own chain (LINK-28); None if it agrees, or there is none to check."""
        checkpoint = welcome.witnessed
        if checkpoint is None or self._journal_hash_at is None:
            return None
        if not isinstance(checkpoint, WitnessedCheckpoint):
            raise LocalProtocolError("the Welcome's witnessed checkpoint was not verified")
        ours = self._journal_hash_at(checkpoint.entry_count)
        if ours == checkpoint.head_hash:
            return None
        size = checkpoint.entry_count if ours is not None else self._journal_size()
        return JournalLost(
            self.last_settled,
            welcome.last_sequence,
            (),
            checkpoint=(checkpoint.entry_count, size),
            forked=ours is not None,
        )

    def _journal_size(self) -> int:
        """Our journal's entry count, found by bisection over `journal_hash_at`."""
        assert self._journal_hash_at is not None
        low, high = 0, 1
        while self._journal_hash_at(high) is not None:
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if self._journal_hash_at(middle) is None:
                high = middle
            else:
                low = middle
        return low

    def _unknown_to_us(self, welcome: Welcome) -> tuple[tuple[int, str], ...]:
        """The (sequence, message id) pairs the Welcome settles above our last settled sequence
        whose messages our outbox does not hold: messages we sent but no longer have a record
        of. Raises RemoteProtocolError if the Welcome leaves a sequence it claims unsettled."""
        above = self.last_settled
        if welcome.last_sequence <= above:
            return ()
        settled: set[int] = set()
        unknown: list[tuple[int, str]] = []
        for receipt in welcome.batch_receipts:
            items: list[ReceiptItem | RejectionItem] = [*receipt.receipts, *receipt.rejections]
            for item in items:
                settled.add(item.sequence)
                if item.sequence <= above or item.sequence in self._settled_above:
                    continue  # settled here already
                if item.message_id and item.message_id not in self._messages:
                    unknown.append((item.sequence, item.message_id))
        have = {s for s in settled | self._settled_above if above < s <= welcome.last_sequence}
        if len(have) != welcome.last_sequence - above:
            gap = next(s for s in range(above + 1, above + len(have) + 2) if s not in have)
            raise RemoteProtocolError(
                f"Welcome says the peer holds up to sequence {welcome.last_sequence}, but its "
                f"batch receipts do not settle sequence {gap}"
            )
        return tuple(sorted(unknown))

    def _check_lane(self, receipt: BatchReceipt) -> None:
        if receipt.lane != self.lane:
            raise RemoteProtocolError(
                f"batch receipt for {receipt.first_sequence}..{receipt.last_sequence} of lane "
                f"{receipt.lane} arrived on lane {self.lane}"
            )

    def _on_batch_receipt(self, receipt: BatchReceipt) -> None:
        self._check_lane(receipt)
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
        if self.state in (SenderState.IDLE, SenderState.HELD):
            return
        stall = self._heartbeat.looked(now)
        for flight in self._in_flight.values():
            flight.sent_at += stall  # neither counts time we could not read receipts
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
            if not self.paused:
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
            chosen: set[str] = set()
            size = 0
            while heap and self.in_flight + len(batch) < self.window:
                if self._lane_use.get(rank, 0) + len(batch) >= self.lanes.get(rank, self.window):
                    break
                if len(batch) >= self.batch_count:
                    break
                _, message_id = heap[0]
                message = self._messages.get(message_id)
                if (
                    message is None
                    or message_id in self._transmitted
                    or message.rank != rank
                    or message_id in chosen  # hurried: it has two heap entries
                ):
                    heapq.heappop(heap)  # settled meanwhile, or a stale heap entry
                    continue
                if (
                    message.after
                    and message.after not in self._messages
                    and self._elsewhere(message.after)
                ):
                    break  # its reference is unsettled on another lane: wait at the head
                first = self._messages.get(message.after) if message.after else None
                if (
                    first is not None
                    and first.rank != rank
                    and first.message_id not in self._transmitted
                ):
                    # Not before the message it refers to: bring that one into this lane. Its
                    # journal position is lower, so it comes out of the heap first.
                    self._messages[first.message_id] = replace(first, rank=rank)
                    heapq.heappush(heap, (first.order, first.message_id))
                    continue
                cost = message.size + DELIVERY_OVERHEAD  # the frame must fit MAX_FRAME_BYTES
                if batch and size + cost > self.batch_bytes:
                    break
                heapq.heappop(heap)
                batch.append(message)
                chosen.add(message_id)
                size += cost
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
