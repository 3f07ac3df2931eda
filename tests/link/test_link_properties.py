"""Property tests of the peer link's rules (sans-IO): two ends joined by a faulty fake cable.

Hypothesis drives a random schedule of sends, frame drops, duplicates, reorders, cuts,
restarts of either side (each losing what it had not yet made durable), and journal flushes.
Both ends are driven only through their actions: a `Persist` becomes durable when the schedule
flushes it (then `persisted()` is reported), a `Send` goes onto the cable. After the schedule
the cable is healed and run to quiescence; then every message must have been journaled by the
receiver exactly once, in journal order within each precedence, with sequences 1..L
contiguous, and the sender must hold a matching settlement for every message.

The invariant "persist, then send" is checked on every frame: a batch receipt on the cable
must settle only batches the receiver already holds durably.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotline.errors import ProtocolError
from hotline.link import (
    Accepted,
    BatchReceipt,
    DeliveryBatch,
    Event,
    Hello,
    InboundLink,
    JournalBatch,
    LinkDown,
    OutboundLink,
    Outgoing,
    Persist,
    ReceiptItem,
    ReceiverFrame,
    RejectionItem,
    RejectReason,
    Seen,
    Send,
    SenderFrame,
    SenderState,
    SettleOutbound,
    Welcome,
)
from hotline.link import Delivery as LinkDelivery

NONCE = b"n" * 16


def digest_of(message_id: str) -> bytes:
    return hashlib.sha256(message_id.encode()).digest()


def check(delivery: LinkDelivery, seen: Callable[[str], Seen | None]) -> Accepted | RejectionItem:
    """The acceptance checks of a world where every payload is its message id, signed."""
    message_id = str(delivery.payload)
    if seen(message_id) is not None:
        return RejectionItem(
            delivery.sequence,
            message_id,
            RejectReason.DUPLICATE_MESSAGE_ID,
            "seen",
            digest=delivery.digest,
        )
    return Accepted(delivery, message_id, None)


@dataclass
class ReceiverDisk:
    """The receiver's durable journal and its archive of batch receipts."""

    receipts: list[BatchReceipt] = field(default_factory=list)
    messages: list[tuple[int, str]] = field(default_factory=list)  # (sequence, id), in order

    @property
    def last_sequence(self) -> int:
        return self.receipts[-1].last_sequence if self.receipts else 0

    def seen(self) -> dict[str, Seen]:
        return {m: Seen(s, digest_of(m)) for s, m in self.messages}

    def batch_receipts_after(
        self, sender_party: str, lane: int, sequence: int
    ) -> list[BatchReceipt]:
        return [r for r in self.receipts if r.last_sequence > sequence]

    def batch_receipt_for(self, sender_party: str, lane: int, sequence: int) -> BatchReceipt | None:
        return next(
            (r for r in self.receipts if r.first_sequence <= sequence <= r.last_sequence), None
        )

    def write(self, batch: JournalBatch) -> BatchReceipt:
        assert batch.first_sequence == self.last_sequence + 1, "sequence gap in journal"
        receipts = []
        for a in batch.accepted:
            assert a.message_id not in {m for _, m in self.messages}, "journaled twice"
            self.messages.append((a.delivery.sequence, a.message_id))
            receipts.append(ReceiptItem(a.delivery.sequence, a.message_id, a.delivery.digest))
        receipt = BatchReceipt(
            batch.first_sequence,
            batch.last_sequence,
            tuple(receipts),
            batch.refused,
            signed=f"signed {batch.first_sequence}",
        )
        receipt.check_complete()
        self.receipts.append(receipt)
        return receipt


@dataclass
class World:
    now: float = 0.0
    outbox: list[Outgoing] = field(default_factory=list)  # the sender's durable journal
    settled: dict[str, int] = field(default_factory=dict)  # sender: durable, id -> sequence
    sender_pending: list[tuple[int, SettleOutbound]] = field(default_factory=list)
    disk: ReceiverDisk = field(default_factory=ReceiverDisk)
    receiver_pending: list[tuple[int, JournalBatch]] = field(default_factory=list)
    to_receiver: deque[tuple[int, SenderFrame]] = field(default_factory=deque)
    to_sender: deque[ReceiverFrame] = field(default_factory=deque)
    stream: int = 0  # the receiver's stream id for frames from the sender's connection
    refused: set[str] = field(default_factory=set)
    window: int = 6
    lanes: dict[int, int] = field(default_factory=lambda: {1: 6, 2: 4, 3: 2, 4: 2})

    def __post_init__(self) -> None:
        self.sender = self._new_sender()
        self.receiver = self._new_receiver()

    def _new_sender(self) -> OutboundLink:
        sender = OutboundLink(
            "JP",
            "TW",
            last_receipted_sequence=max(self.settled.values(), default=0),
            window=self.window,
            lanes=self.lanes,
            batch_count=3,
        )
        for message in self.outbox:
            if message.message_id not in self.settled and message.message_id not in self.refused:
                sender.enqueue(message)
        return sender

    def _new_receiver(self) -> InboundLink:
        return InboundLink(
            "TW",
            "JP",
            last_sequence=self.disk.last_sequence,
            seen=self.disk.seen(),
            archive=self.disk,
            check=check,
        )

    # -- the two ends' actions

    def run_sender(self) -> None:
        for action in self.sender.drain():
            if isinstance(action, Send):
                frame = action.frame
                assert not isinstance(frame, BatchReceipt)
                self.to_receiver.append((id(self.sender), frame))  # type: ignore[arg-type]
            elif isinstance(action, Persist):
                assert isinstance(action.record, SettleOutbound)
                self.sender_pending.append((action.token, action.record))
            elif isinstance(action, Event) and isinstance(action.event, LinkDown):
                self.cut()

    def run_receiver(self) -> None:
        for action in self.receiver.drain():
            if isinstance(action, Send):
                if action.stream != self.receiver.stream:
                    continue
                frame = action.frame
                if isinstance(frame, BatchReceipt):
                    # persist, then send: the receipt exists only for a durable batch
                    assert frame.last_sequence <= self.disk.last_sequence
                self.to_sender.append(frame)  # type: ignore[arg-type]
            elif isinstance(action, Persist):
                assert isinstance(action.record, JournalBatch)
                self.receiver_pending.append((action.token, action.record))

    # -- steps

    def send(self, rank: int) -> None:
        n = len(self.outbox)
        mid = f"m{n:04d}"
        message = Outgoing(mid, rank, n, digest_of(mid), mid, 10)
        self.outbox.append(message)
        self.sender.enqueue(message)

    def cut(self) -> None:
        self.to_receiver.clear()
        self.to_sender.clear()
        if self.sender.state is not SenderState.IDLE:
            self.sender.disconnect("cut")
            self.sender.drain()  # only its LinkDown: every other action was carried out
        self.receiver.close(self.receiver.stream)
        self.stream = 0

    def restart_sender(self) -> None:
        self.cut()
        self.sender_pending.clear()  # lost in the crash
        self.sender = self._new_sender()

    def restart_receiver(self) -> None:
        self.cut()
        self.receiver_pending.clear()  # lost in the crash
        self.receiver = self._new_receiver()

    def flush(self) -> None:
        """Both journals commit everything submitted, in order, and report it."""
        while self.sender_pending:
            token, plan = self.sender_pending.pop(0)
            for item in plan.receipted:
                self.settled[item.message_id] = item.sequence
            for held, original in plan.delivered_before:
                self.settled[held.message_id] = original.sequence
            for rejection in plan.refused:
                self.refused.add(rejection.message_id)
            self.sender.persisted(token)
            self.run_sender()
        while self.receiver_pending:
            token, batch = self.receiver_pending.pop(0)
            receipt = self.disk.write(batch)
            self.receiver.persisted(token, receipt)
            self.run_receiver()

    def connect(self) -> None:
        if self.sender.state is SenderState.IDLE:
            self.sender.connect(self.now, NONCE)
            self.run_sender()

    def tick(self) -> None:
        self.sender.tick(self.now)
        self.run_sender()

    def to_receiver_step(self, mode: str, index: int) -> None:
        if not self.to_receiver:
            return
        index %= len(self.to_receiver)
        _, frame = self.to_receiver[index]
        if mode != "dup":
            del self.to_receiver[index]
        if mode == "drop":
            return
        try:
            if isinstance(frame, Hello):
                self.stream = self.receiver.hello(frame, self.now)
            elif self.stream:
                self.receiver.receive(frame, self.now, self.stream)
            else:
                return
        except ProtocolError:
            self.cut()
        self.run_receiver()

    def to_sender_step(self, mode: str, index: int) -> None:
        if not self.to_sender:
            return
        index %= len(self.to_sender)
        frame = self.to_sender[index]
        if mode != "dup":
            del self.to_sender[index]
        if mode == "drop" or self.sender.state is SenderState.IDLE:
            return
        try:
            self.sender.receive(frame, self.now)
        except ProtocolError:
            self.cut()
            return
        self.run_sender()

    def heal(self) -> None:
        """A perfect cable until nothing moves (bounded)."""
        for _ in range(2000):
            self.now += 0.1
            self.flush()
            self.tick()  # a lost Hello/Welcome: the deadline ends the stream
            self.connect()
            self.tick()
            moved = bool(self.to_receiver or self.to_sender)
            while self.to_receiver or self.to_sender:
                while self.to_receiver:
                    self.to_receiver_step("ok", 0)
                self.flush()
                while self.to_sender:
                    self.to_sender_step("ok", 0)
                self.flush()
                self.tick()
            if not moved and self.sender.queue_depth == 0 and not self.sender_pending:
                return
        raise AssertionError("link did not settle")


# Weighted so that schedules make progress between faults: most steps move a frame.
_STEPS = (
    ["r-ok"] * 8
    + ["s-ok"] * 8
    + ["tick"] * 4
    + ["send"] * 4
    + ["connect"] * 2
    + ["flush"] * 3
    + ["r-drop", "r-dup", "s-drop", "s-dup", "cut", "restart-sender", "restart-receiver"]
    + ["timeout"]
)
actions = st.tuples(st.sampled_from(_STEPS), st.integers(0, 7))


def run_schedule(schedule: list[tuple[str, int]]) -> World:
    world = World()
    for name, arg in schedule:
        world.now += 0.1
        if name == "send":
            world.send(arg % 4 + 1)
        elif name == "tick":
            world.tick()
        elif name == "connect":
            world.connect()
        elif name == "cut":
            world.cut()
        elif name == "restart-sender":
            world.restart_sender()
        elif name == "restart-receiver":
            world.restart_receiver()
        elif name == "flush":
            world.flush()
        elif name == "timeout":
            world.now += 7.0
            world.tick()
        else:
            side, mode = name.split("-")
            # a non-zero index takes a later frame first: a reordering cable (1 in 4 steps)
            arg = arg if arg >= 6 else 0
            if side == "r":
                world.to_receiver_step(mode, arg)
            else:
                world.to_sender_step(mode, arg)
    world.heal()
    return world


def check_exactly_once_in_order(world: World) -> None:
    disk = world.disk
    journaled = [m for _, m in disk.messages]
    sent = [m.message_id for m in world.outbox]
    assert sorted(journaled) == sorted(sent), "lost or duplicated"
    assert len(set(journaled)) == len(journaled)
    rank = {m.message_id: m.rank for m in world.outbox}
    order = {m.message_id: m.order for m in world.outbox}
    for r in range(1, 5):
        same = [order[m] for m in journaled if rank[m] == r]
        assert same == sorted(same), f"precedence {r} delivered out of journal order"
    covered = [s for r in disk.receipts for s in range(r.first_sequence, r.last_sequence + 1)]
    assert covered == list(range(1, len(covered) + 1)), "settled sequences not contiguous"
    assert world.settled == {m: s for s, m in disk.messages}
    assert not world.refused


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, max_size=120))
@pytest.mark.must("LINK-11", "LINK-18")
def test_any_schedule_of_faults_still_gives_exactly_once_in_order_delivery(
    schedule: list[tuple[str, int]],
) -> None:
    check_exactly_once_in_order(run_schedule(schedule))


def test_four_hundred_long_random_fault_schedules_with_fixed_seeds() -> None:
    """Long schedules (Hypothesis favours short ones): fixed seeds, so failures reproduce."""
    for seed in range(400):
        rng = random.Random(seed)
        schedule = [(rng.choice(_STEPS), rng.randint(0, 7)) for _ in range(rng.randint(20, 200))]
        try:
            check_exactly_once_in_order(run_schedule(schedule))
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc


def open_world(**kwargs: object) -> World:
    world = World(**kwargs)  # type: ignore[arg-type]
    world.connect()
    world.to_receiver_step("ok", 0)  # Hello
    world.to_sender_step("ok", 0)  # Welcome
    assert world.sender.up
    return world


def sent_batches(world: World) -> list[DeliveryBatch]:
    return [f for _, f in world.to_receiver if isinstance(f, DeliveryBatch)]


@pytest.mark.must("LINK-12")
def test_flash_overtakes_queued_routine_traffic() -> None:
    world = World()
    for _ in range(10):
        world.send(4)
    world.send(1)  # FLASH after ten ROUTINE, before the link is up
    world.connect()
    world.to_receiver_step("ok", 0)
    world.to_sender_step("ok", 0)
    world.tick()
    batches = sent_batches(world)
    assert [d.message_id for d in batches[0].deliveries] == ["m0010"]
    assert batches[0].first_sequence == 1
    assert [d.sequence for b in batches for d in b.deliveries] == [1, 2, 3]  # ROUTINE lane: 2


def test_flash_is_not_held_back_by_routine_already_in_flight() -> None:
    """The ROUTINE lane is full (its allowance in flight, unsettled); a FLASH still goes."""
    world = open_world()
    for _ in range(5):
        world.send(4)
    world.tick()
    assert world.sender.in_flight == 2  # the ROUTINE allowance
    world.send(1)
    world.tick()
    last = sent_batches(world)[-1]
    assert [d.message_id for d in last.deliveries] == ["m0005"]
    assert world.sender.in_flight == 3


def test_a_batch_holds_one_precedence_and_at_most_batch_count() -> None:
    world = open_world(lanes={1: 6, 2: 6, 3: 6, 4: 6})
    for rank in (2, 2, 2, 2, 3):
        world.send(rank)
    world.tick()
    batches = sent_batches(world)
    assert [[d.message_id for d in b.deliveries] for b in batches] == [
        ["m0000", "m0001", "m0002"],
        ["m0003"],
        ["m0004"],
    ]


@pytest.mark.must("LINK-15")
def test_a_batch_receipt_is_sent_only_after_its_batch_is_durable() -> None:
    world = open_world()
    world.send(4)
    world.tick()
    world.to_receiver_step("ok", 0)
    assert world.to_sender == deque()  # journaled, not yet durable: nothing sent
    assert len(world.receiver_pending) == 1
    world.flush()
    [receipt] = list(world.to_sender)
    assert isinstance(receipt, BatchReceipt)
    assert [r.message_id for r in receipt.receipts] == ["m0000"]


@pytest.mark.must("LINK-25")
def test_a_welcome_waits_for_the_batches_of_the_stream_before_it() -> None:
    world = open_world()
    world.send(4)
    world.tick()
    world.to_receiver_step("ok", 0)  # the batch: accepted, persisting
    world.cut()
    world.connect()
    world.to_receiver_step("ok", 0)  # the new Hello
    assert world.to_sender == deque()  # the Welcome waits for the batch to be durable
    world.flush()
    welcome = world.to_sender[0]
    assert welcome.last_sequence == 1  # type: ignore[union-attr]


def test_a_hello_waits_for_the_settlements_it_claims() -> None:
    world = open_world()
    world.send(4)
    world.tick()
    world.to_receiver_step("ok", 0)
    world.flush()
    world.to_sender_step("ok", 0)  # the batch receipt: settlement persisting
    assert world.sender.last_settled == 1
    world.cut()
    world.connect()
    assert world.to_receiver == deque()  # the Hello claims 1: it waits until that is durable
    world.flush()
    [(_, hello)] = list(world.to_receiver)
    assert isinstance(hello, Hello)
    assert hello.last_receipted_sequence == 1


@pytest.mark.must("LINK-19")
def test_resume_teaches_the_sender_receipts_it_lost_in_a_crash() -> None:
    world = open_world()
    for _ in range(3):
        world.send(4)
    world.tick()
    world.to_receiver_step("ok", 0)
    world.flush()
    world.to_sender.clear()  # the batch receipt lost on the wire
    world.restart_sender()
    assert world.sender.queue_depth == 3  # it knows of no settlement
    world.connect()
    world.to_receiver_step("ok", 0)
    welcome = world.to_sender[0]
    assert [r.first_sequence for r in welcome.batch_receipts] == [1]  # type: ignore[union-attr]
    world.to_sender_step("ok", 0)
    world.flush()
    # m0000 and m0001 (the ROUTINE allowance was 2) were settled; m0002 goes next, as 3
    assert world.settled == {"m0000": 1, "m0001": 2}
    assert world.sender.queue_depth == 1
    world.tick()
    [batch] = sent_batches(world)
    assert [(d.sequence, d.message_id) for d in batch.deliveries] == [(3, "m0002")]


@pytest.mark.must("LINK-4", "LINK-6")
def test_a_welcome_with_another_nonce_is_refused_and_changes_nothing() -> None:
    world = World()
    world.send(4)
    world.connect()
    world.to_receiver_step("ok", 0)
    welcome = world.to_sender.popleft()
    assert isinstance(welcome, Welcome)
    forged = replace(welcome, hello_nonce=b"x" * 16)
    with pytest.raises(ProtocolError, match="nonce"):
        world.sender.receive(forged, world.now)
    assert world.sender.state is SenderState.HELLO_SENT
    world.sender.tick(world.now)
    assert world.sender.drain() == []  # nothing was sent


def test_a_batch_receipt_for_other_bytes_is_refused_and_settles_nothing() -> None:
    world = open_world()
    world.send(4)
    world.tick()
    world.to_receiver_step("ok", 0)
    world.flush()
    receipt = world.to_sender.popleft()
    assert isinstance(receipt, BatchReceipt)
    item = receipt.receipts[0]
    tampered = BatchReceipt(1, 1, (ReceiptItem(1, item.message_id, b"\x00" * 32),), ())
    with pytest.raises(ProtocolError, match=r"different\ bytes"):
        world.sender.receive(tampered, world.now)
    assert world.sender.drain() == []
    assert world.sender.queue_depth == 1


@pytest.mark.must("LINK-16")
def test_a_replayed_batch_is_answered_with_the_stored_receipt_and_not_journaled() -> None:
    world = open_world()
    world.send(4)
    world.tick()
    [(_, batch)] = list(world.to_receiver)
    world.to_receiver_step("ok", 0)
    world.flush()
    first = world.to_sender.popleft()
    world.receiver.receive(batch, world.now, world.stream)  # type: ignore[arg-type]
    world.run_receiver()
    assert list(world.to_sender) == [first]
    assert world.receiver_pending == []
    assert [m for _, m in world.disk.messages] == ["m0000"]


@pytest.mark.must("LINK-17")
def test_a_gap_ends_the_stream_as_out_of_order() -> None:
    world = open_world()
    gap = DeliveryBatch((LinkDelivery(5, "", digest_of("x"), "x", 1),))
    with pytest.raises(ProtocolError, match=r"^OUT_OF_ORDER:"):
        world.receiver.receive(gap, world.now, world.stream)


@pytest.mark.must("LINK-22")
def test_heartbeat_declares_a_silent_link_down() -> None:
    world = open_world()
    start = world.now
    for step in range(1, 11):  # ticking every half second: 5 s of silence is not yet down
        world.sender.tick(start + step * 0.5)
    assert not any(isinstance(a, Event) for a in world.sender.drain())
    for step in range(11, 14):  # 6.5 s
        world.sender.tick(start + step * 0.5)
    events = [a.event for a in world.sender.drain() if isinstance(a, Event)]
    assert [type(e).__name__ for e in events] == ["LinkDown"]
    assert world.sender.state is SenderState.IDLE


def test_silence_while_this_end_was_stalled_is_not_the_peers() -> None:
    """A saturated event loop ticks late; the gap is forgiven, the link stays up, and a peer
    that stays silent is still declared down once this end has listened for dead_after."""
    world = open_world()
    start = world.now
    world.sender.tick(start + 0.5)
    world.sender.tick(start + 9.0)  # this end could not look for 8.5 s
    world.sender.tick(start + 9.5)
    assert world.sender.state is SenderState.OPEN
    assert not any(isinstance(a, Event) for a in world.sender.drain())
    now = start + 9.5
    while world.sender.up and now < start + 30:
        now += 0.5
        world.sender.tick(now)
    assert not world.sender.up
    assert 12.0 < now - start < 14.0  # dead_after of attention (one interval of the stall counts)


def test_a_batch_receipt_that_swaps_messages_between_sequences_is_refused() -> None:
    world = open_world(lanes={1: 6, 2: 6, 3: 6, 4: 6})
    world.send(4)
    world.send(4)
    world.tick()
    world.to_receiver_step("ok", 0)
    world.flush()
    receipt = world.to_sender.popleft()
    assert isinstance(receipt, BatchReceipt)
    a, b = receipt.receipts
    swapped = BatchReceipt(
        1,
        2,
        (ReceiptItem(1, b.message_id, b.digest), ReceiptItem(2, a.message_id, a.digest)),
        (),
    )
    with pytest.raises(ProtocolError, match=r"was\ sent"):
        world.sender.receive(swapped, world.now)
    assert world.sender.drain() == []
    assert world.sender.queue_depth == 2
